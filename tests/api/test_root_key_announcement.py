"""A generated root key reaches the operator once, and never the log stream."""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path

import pytest

from keyplane.api.app import announce_root_key
from keyplane.settings import Settings, generated_root_key_path

SECRET = "kp_mgmt_" + "A" * 40


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_on_a_terminal_the_key_is_shown_and_no_file_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stream = _Stream(tty=True)
    monkeypatch.setattr("sys.stderr", stream)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}")
    announce_root_key(SECRET, settings)
    assert SECRET in stream.getvalue()
    assert not generated_root_key_path(settings).exists()


def test_without_a_terminal_the_key_goes_to_a_0600_file_and_only_its_path_is_logged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = _Stream(tty=False)
    monkeypatch.setattr("sys.stderr", stream)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}")
    with caplog.at_level(logging.INFO):
        announce_root_key(SECRET, settings)
    path = tmp_path / "k.db.root-key"
    assert generated_root_key_path(settings) == path
    assert path.read_text() == SECRET + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SECRET not in stream.getvalue()
    assert SECRET not in caplog.text
    assert str(path) in caplog.text


def test_the_file_can_be_chosen_and_a_planted_link_is_replaced_not_followed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.stderr", _Stream(tty=False))
    target = tmp_path / "elsewhere"
    target.write_text("not yours\n")
    chosen = tmp_path / "secrets" / "root"
    chosen.parent.mkdir()
    os.symlink(target, chosen)
    settings = Settings(
        database_url="postgresql://db/keyplane", generated_root_key_file=chosen, secret="s" * 32
    )
    announce_root_key(SECRET, settings)
    assert target.read_text() == "not yours\n"
    assert not chosen.is_symlink()
    assert chosen.read_text() == SECRET + "\n"
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o600
    assert [p.name for p in chosen.parent.iterdir()] == ["root"]  # no temporary left behind


def test_on_postgresql_the_default_file_is_in_the_working_directory() -> None:
    settings = Settings(database_url="postgresql://db/keyplane", secret="s" * 32)
    assert generated_root_key_path(settings) == Path("keyplane.root-key")


def test_a_write_failure_is_an_error_in_the_log_without_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("sys.stderr", _Stream(tty=False))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # A path under a regular file cannot be created, whoever runs the test.
    settings = Settings(generated_root_key_file=blocker / "root")
    announce_root_key(SECRET, settings)
    assert "could not write" in caplog.text and "KEYPLANE_ROOT_KEY" in caplog.text
    assert SECRET not in caplog.text
