"""Master key rotation against the real databases: every secret moves to the new key, none is
readable with the old one afterwards, a concurrent write is never overwritten, and re-runs and
wrong keys are handled."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from keyplane.cli.main import app as cli
from keyplane.domain.envelope import (
    Keyring,
    MasterKey,
    credential_aad,
    seal,
    token_key_id,
    unseal,
)
from keyplane.errors import StorageError, VaultIntegrityError, VaultKeyError
from keyplane.services import vault_rotation
from keyplane.settings import to_async_url
from keyplane.store.migrate import migrate
from keyplane.store.tables import organizations, vault_credentials
from keyplane.store.unit import UnitOfWork, create_engine
from keyplane.store.vault_sealed import SqlSealedSecretStore
from tests.conftest import Database

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
OLD = MasterKey(b"o" * 32)
NEW = MasterKey(b"n" * 32)
STRANGER = MasterKey(b"s" * 32)
ORG = "org_rotation"


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(to_async_url(database.url), database.schema)
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(insert(organizations).values(id=ORG, name="rotation", created_at=NOW))
    yield engine
    await engine.dispose()


def _secret(index: int) -> str:
    return f"sk-proj-secret-number-{index:03d}-" + "z" * 20


def _sealed(engine: AsyncEngine) -> SqlSealedSecretStore:
    return SqlSealedSecretStore(UnitOfWork(engine))


async def _add(engine: AsyncEngine, count: int, key: MasterKey = OLD) -> list[str]:
    ids = [f"cred_{index:03d}" for index in range(count)]
    rows: list[dict[str, Any]] = []
    for index, credential_id in enumerate(ids):
        token = seal(Keyring(key), _secret(index), credential_aad(ORG, credential_id))
        rows.append(
            {
                "id": credential_id,
                "org_id": ORG,
                "provider": "openai",
                "alias": f"key-{index}",
                "sealed_secret": token,
                "master_key_id": token_key_id(token),
                "secret_hint": "sk...zz",
                "tags": [],
                "meta": {},
                "weight": 1,
                "status": "active",
                "day_count": 0,
                "month_count": 0,
                "total_count": 0,
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(insert(vault_credentials), rows)
    return ids


async def _tokens(engine: AsyncEngine) -> dict[str, tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                vault_credentials.c.id,
                vault_credentials.c.sealed_secret,
                vault_credentials.c.master_key_id,
            )
        )
        return {row.id: (row.sealed_secret, row.master_key_id) for row in rows}


async def test_rotation_moves_every_secret_to_the_new_key(engine: AsyncEngine) -> None:
    ids = await _add(engine, 7)
    before = await _tokens(engine)
    seen: list[int] = []

    report = await vault_rotation.rotate_master(
        _sealed(engine),
        Keyring(NEW, [OLD]),
        batch_size=3,
        progress=lambda r: seen.append(r.rewrapped),
    )

    assert (report.rewrapped, report.already_current, report.remaining) == (7, 0, 0)
    assert report.complete and report.failed == []
    assert seen == [3, 6, 7]
    after = await _tokens(engine)
    for index, credential_id in enumerate(ids):
        token, key_id = after[credential_id]
        assert key_id == token_key_id(token) == NEW.key_id
        # The secret ciphertext itself is untouched; only the wrapped data key changed.
        assert token.split(".")[3] == before[credential_id][0].split(".")[3]
        aad = credential_aad(ORG, credential_id)
        assert unseal(Keyring(NEW), token, aad) == _secret(index)
        with pytest.raises(VaultKeyError):
            unseal(Keyring(OLD), token, aad)
    assert await vault_rotation.count_by_key(_sealed(engine)) == {NEW.key_id: 7}


async def test_a_rerun_changes_nothing(engine: AsyncEngine) -> None:
    await _add(engine, 4)
    await vault_rotation.rotate_master(_sealed(engine), Keyring(NEW, [OLD]))
    after_first = await _tokens(engine)

    again = await vault_rotation.rotate_master(_sealed(engine), Keyring(NEW, [OLD]))

    assert (again.rewrapped, again.already_current, again.remaining) == (0, 4, 0)
    assert await _tokens(engine) == after_first


async def test_rotation_finishes_a_mixed_table(engine: AsyncEngine) -> None:
    # As after an interrupted run, or with servers already sealing new secrets with NEW.
    await _add(engine, 3)
    async with engine.begin() as conn:
        token = seal(Keyring(NEW), "sk-new", credential_aad(ORG, "cred_new"))
        await conn.execute(
            update(vault_credentials)
            .where(vault_credentials.c.id == "cred_001")
            .values(sealed_secret=token, master_key_id=NEW.key_id)
        )
    report = await vault_rotation.rotate_master(_sealed(engine), Keyring(NEW, [OLD]))
    # cred_001 now holds a token bound to another row: it was already "current", so left alone.
    assert (report.rewrapped, report.already_current, report.remaining) == (2, 1, 0)


async def test_a_wrong_old_key_is_refused_before_anything_changes(engine: AsyncEngine) -> None:
    await _add(engine, 3)
    before = await _tokens(engine)

    with pytest.raises(VaultKeyError, match=rf"master key {OLD.key_id} \(3 credentials\)"):
        await vault_rotation.rotate_master(_sealed(engine), Keyring(NEW, [STRANGER]))

    assert await _tokens(engine) == before


async def test_a_damaged_row_is_reported_and_the_others_rotate(engine: AsyncEngine) -> None:
    ids = await _add(engine, 4)
    tokens = await _tokens(engine)
    # Copy cred_000's token into cred_002: bound to another row, it must not be opened there.
    async with engine.begin() as conn:
        await conn.execute(
            update(vault_credentials)
            .where(vault_credentials.c.id == ids[2])
            .values(sealed_secret=tokens[ids[0]][0])
        )

    report = await vault_rotation.rotate_master(_sealed(engine), Keyring(NEW, [OLD]), batch_size=2)

    assert report.rewrapped == 3
    assert [credential_id for credential_id, _ in report.failed] == [ids[2]]
    assert "integrity" in report.failed[0][1]
    assert report.remaining == 1 and not report.complete
    after = await _tokens(engine)
    assert after[ids[2]] == (tokens[ids[0]][0], OLD.key_id)
    with pytest.raises(VaultIntegrityError):
        unseal(Keyring(NEW, [OLD]), after[ids[2]][0], credential_aad(ORG, ids[2]))


def _write_elsewhere(database: Database, credential_id: str, token: str, key_id: str) -> None:
    """A server's write, from another connection (and event loop), while the rotation runs."""

    async def write() -> None:
        other = create_engine(to_async_url(database.url), database.schema)
        try:
            async with other.begin() as conn:
                await conn.execute(
                    update(vault_credentials)
                    .where(vault_credentials.c.id == credential_id)
                    .values(sealed_secret=token, master_key_id=key_id)
                )
        finally:
            await other.dispose()

    thread = threading.Thread(target=lambda: asyncio.run(write()))
    thread.start()
    thread.join()


async def test_a_secret_updated_during_the_rotation_is_not_overwritten(
    engine: AsyncEngine, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await _add(engine, 3)
    target = ids[1]
    # A server still on the old key updates the secret between the rotation's read and write.
    updated = seal(Keyring(OLD), "sk-updated-by-a-server", credential_aad(ORG, target))
    real_rewrap = vault_rotation.rewrap
    raced: list[str] = []

    def rewrap_with_a_race(keyring: Keyring, token: str, aad: bytes) -> str:
        if aad == credential_aad(ORG, target) and not raced:
            raced.append(token)
            _write_elsewhere(database, target, updated, OLD.key_id)
        return real_rewrap(keyring, token, aad)

    monkeypatch.setattr(vault_rotation, "rewrap", rewrap_with_a_race)

    report = await vault_rotation.rotate_master(_sealed(engine), Keyring(NEW, [OLD]))

    assert raced
    # The first attempt missed its compare-and-set; the next pass re-wrapped the new secret.
    assert (report.changed, report.rewrapped, report.remaining) == (1, 3, 0)
    token, key_id = (await _tokens(engine))[target]
    assert key_id == NEW.key_id
    assert unseal(Keyring(NEW), token, credential_aad(ORG, target)) == "sk-updated-by-a-server"


async def test_the_database_without_the_vault_table_gives_a_clear_error(tmp_path: Path) -> None:
    engine = create_engine(to_async_url(f"sqlite:///{tmp_path / 'empty.db'}"))
    try:
        with pytest.raises(StorageError, match="run `keyplane migrate` first"):
            await vault_rotation.rotate_master(_sealed(engine), Keyring(NEW, [OLD]))
    finally:
        await engine.dispose()


def test_rotate_master_command(
    sqlite_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def prepare() -> None:
        engine = create_engine(to_async_url(sqlite_database.url))
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                await conn.execute(
                    insert(organizations).values(id=ORG, name="rotation", created_at=NOW)
                )
            await _add(engine, 5)
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    old_file = tmp_path / "old.key"
    old_file.write_text(OLD.to_base64() + "\n")
    old_file.chmod(0o600)
    stranger_file = tmp_path / "stranger.key"
    stranger_file.write_text(STRANGER.to_base64())
    stranger_file.chmod(0o400)
    monkeypatch.setenv("KEYPLANE_DATABASE_URL", sqlite_database.url)
    monkeypatch.setenv("KEYPLANE_VAULT_KEY", NEW.to_base64())
    monkeypatch.delenv("KEYPLANE_VAULT_PREVIOUS_KEYS", raising=False)
    runner = CliRunner()

    wrong = runner.invoke(cli, ["vault", "rotate-master", "--old-key-file", str(stranger_file)])
    assert wrong.exit_code == 2
    assert f"sealed with master key {OLD.key_id} (5 credentials)" in wrong.output
    assert "Nothing was changed" in wrong.output

    dry = runner.invoke(
        cli,
        ["vault", "rotate-master", "--dry-run"],
        env={"KEYPLANE_VAULT_PREVIOUS_KEYS": OLD.to_base64()},
    )
    assert dry.exit_code == 0, dry.output
    assert f"would re-wrap 5 credentials to master key {NEW.key_id}" in dry.output

    done = runner.invoke(cli, ["vault", "rotate-master", "--old-key-file", str(old_file)])
    assert done.exit_code == 0, done.output
    assert f"re-wrapped 5 credentials to master key {NEW.key_id}" in done.output
    assert "0 remain on older keys" in done.output
    for output in (wrong.output, dry.output, done.output):
        assert OLD.to_base64() not in output and NEW.to_base64() not in output
        assert "sk-proj-secret" not in output

    again = runner.invoke(cli, ["vault", "rotate-master"])
    assert again.exit_code == 0, again.output
    assert "re-wrapped 0 credentials" in again.output and "5 were already on it" in again.output


def test_rotate_master_needs_a_current_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEYPLANE_VAULT_KEY", "KEYPLANE_VAULT_KEY_FILE", "KEYPLANE_VAULT_PREVIOUS_KEYS"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["vault", "rotate-master"])
    assert result.exit_code == 2
    assert "no vault master key" in result.output


def test_generate_key_and_key_id(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(cli, ["vault", "generate-key"])
    assert printed.exit_code == 0
    key = MasterKey.from_base64(printed.stdout)

    ids = runner.invoke(cli, ["vault", "key-id"], env={"KEYPLANE_VAULT_KEY": key.to_base64()})
    assert ids.stdout.split() == ["current", key.key_id]

    target = tmp_path / "vault.key"
    written = runner.invoke(cli, ["vault", "generate-key", "--output", str(target)])
    assert written.exit_code == 0
    assert target.stat().st_mode & 0o777 == 0o600
    from_file = runner.invoke(cli, ["vault", "key-id", "--key-file", str(target)])
    assert from_file.stdout.strip() in written.output
    # Never overwrites an existing key file.
    refused = runner.invoke(cli, ["vault", "generate-key", "--output", str(target)])
    assert refused.exit_code == 1


async def test_check_opens_every_secret_and_names_the_damaged_ones(engine: AsyncEngine) -> None:
    ids = await _add(engine, 5)
    tokens = await _tokens(engine)
    # A flipped bit in the secret's own ciphertext: a rotation would not notice (it only
    # re-wraps the data key), the check does.
    prefix, key_id, wrapped, body = tokens[ids[1]][0].split(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=="))
    raw[-1] ^= 0x01
    flipped = ".".join(
        [prefix, key_id, wrapped, base64.urlsafe_b64encode(raw).rstrip(b"=").decode()]
    )
    async with engine.begin() as conn:
        await conn.execute(
            update(vault_credentials)
            .where(vault_credentials.c.id == ids[1])
            .values(sealed_secret=flipped)
        )
    report = await vault_rotation.rotate_master(_sealed(engine), Keyring(NEW, [OLD]))
    assert report.complete and report.rewrapped == 5

    checked = await vault_rotation.check_all(_sealed(engine), Keyring(NEW), batch_size=2)

    assert checked.opened == 4
    assert checked.by_key == {NEW.key_id: 5}
    assert [credential_id for credential_id, _ in checked.failed] == [ids[1]]
    assert "integrity" in checked.failed[0][1]
    # With only the old key nothing opens, and each failure names the missing key.
    stale = await vault_rotation.check_all(_sealed(engine), Keyring(OLD))
    assert stale.opened == 0 and len(stale.failed) == 5
    assert all(NEW.key_id in reason for _, reason in stale.failed)


def test_check_command(
    sqlite_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def prepare() -> None:
        engine = create_engine(to_async_url(sqlite_database.url))
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                await conn.execute(
                    insert(organizations).values(id=ORG, name="rotation", created_at=NOW)
                )
            await _add(engine, 3)
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    monkeypatch.setenv("KEYPLANE_DATABASE_URL", sqlite_database.url)
    monkeypatch.setenv("KEYPLANE_VAULT_KEY", NEW.to_base64())
    monkeypatch.delenv("KEYPLANE_VAULT_PREVIOUS_KEYS", raising=False)
    runner = CliRunner()

    missing = runner.invoke(cli, ["vault", "check"])
    assert missing.exit_code == 1
    assert f"{OLD.key_id}  3 credentials  (NOT CONFIGURED)" in missing.output
    assert "0 opened, 3 failed" in missing.output

    old_file = tmp_path / "old.key"
    old_file.write_text(OLD.to_base64())
    old_file.chmod(0o600)
    fine = runner.invoke(cli, ["vault", "check", "--old-key-file", str(old_file)])
    assert fine.exit_code == 0, fine.output
    assert f"{OLD.key_id}  3 credentials  (previous)" in fine.output
    assert "3 opened, 0 failed" in fine.output
    assert "sk-proj-secret" not in fine.output + missing.output
