"""Vault master key settings: KEYPLANE_VAULT_KEY, _FILE and _PREVIOUS_KEYS."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from pydantic import ValidationError as SettingsValidationError

from keyplane.domain.envelope import MasterKey
from keyplane.errors import ConfigurationError
from keyplane.settings import Settings

CURRENT = MasterKey(b"c" * 32)
OLD_1 = MasterKey(b"1" * 32)
OLD_2 = MasterKey(b"2" * 32)


def _settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_vault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEYPLANE_VAULT_KEY", "KEYPLANE_VAULT_KEY_FILE", "KEYPLANE_VAULT_PREVIOUS_KEYS"):
        monkeypatch.delenv(name, raising=False)


def test_no_vault_key_means_no_keyring() -> None:
    settings = _settings()
    assert settings.vault_keyring() is None
    assert not settings.vault_key_configured


def test_vault_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYPLANE_VAULT_KEY", CURRENT.to_base64())
    monkeypatch.setenv(
        "KEYPLANE_VAULT_PREVIOUS_KEYS", f" {OLD_1.to_base64()} ,{OLD_2.to_base64()},"
    )
    keyring = Settings().vault_keyring()
    assert keyring is not None
    assert keyring.current == CURRENT
    assert keyring.previous == (OLD_1, OLD_2)
    assert CURRENT.to_base64() not in repr(Settings())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "exactly 32 bytes, got 0"),
        (base64.b64encode(b"x" * 31).decode(), "exactly 32 bytes, got 31"),
        (base64.b64encode(b"x" * 33).decode(), "exactly 32 bytes, got 33"),
        ("this is not base64!", "not valid base64"),
        (b"x".hex() * 32, "exactly 32 bytes"),  # 64 hex chars: base64 of 48 bytes
    ],
)
def test_a_bad_vault_key_is_refused_without_echoing_it(value: str, message: str) -> None:
    with pytest.raises(SettingsValidationError) as caught:
        _settings(vault_key=value)
    assert message in str(caught.value)
    if value:
        assert value not in str(caught.value)


def test_a_bad_previous_key_names_its_position() -> None:
    with pytest.raises(SettingsValidationError, match="PREVIOUS_KEYS item 2"):
        _settings(vault_key=CURRENT.to_base64(), vault_previous_keys=f"{OLD_1.to_base64()},junk")
    with pytest.raises(SettingsValidationError, match="empty"):
        _settings(vault_key=CURRENT.to_base64(), vault_previous_keys=" , ")


def test_previous_keys_need_a_current_key() -> None:
    with pytest.raises(SettingsValidationError, match="needs a current key"):
        _settings(vault_previous_keys=OLD_1.to_base64())


def test_key_and_key_file_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SettingsValidationError, match="not both"):
        _settings(vault_key=CURRENT.to_base64(), vault_key_file=tmp_path / "k")


def _key_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "vault.key"
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    "content",
    [CURRENT.to_base64().encode() + b"\n", CURRENT.to_base64().encode(), b"c" * 32],
    ids=["base64-line", "base64", "raw-bytes"],
)
def test_vault_key_file_holds_base64_or_raw_bytes(tmp_path: Path, content: bytes) -> None:
    keyring = _settings(vault_key_file=_key_file(tmp_path, content, 0o400)).vault_keyring()
    assert keyring is not None
    assert keyring.current == CURRENT


def test_a_missing_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the vault key file"):
        _settings(vault_key_file=tmp_path / "absent").vault_keyring()


def test_a_key_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = _key_file(tmp_path, CURRENT.to_base64().encode(), 0o622)
    with pytest.raises(ConfigurationError, match="writable by group or others"):
        _settings(vault_key_file=path).vault_keyring()


@pytest.mark.parametrize("content", [b"", b"short", b"\xff" * 40], ids=["empty", "short", "binary"])
def test_a_key_file_without_a_key_is_refused(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ConfigurationError, match="vault key file"):
        _settings(vault_key_file=_key_file(tmp_path, content)).vault_keyring()


def test_serve_refuses_a_bad_key_file_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from keyplane.cli.main import app

    monkeypatch.setenv("KEYPLANE_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    monkeypatch.setenv("KEYPLANE_VAULT_KEY_FILE", str(_key_file(tmp_path, b"not a key")))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "error: vault key file" in result.output
    assert "Traceback" not in result.output
