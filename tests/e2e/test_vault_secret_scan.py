"""Acceptance (vault): no upstream secret and no master key appears anywhere in the database
files or the logs, through adding, bulk adding, updating, listing, leasing with every outcome,
bad input carrying secrets, and a master key rotation; and after the rotation every secret is
readable with the new key only.

A real ``keyplane serve`` at log level debug makes the writes; ``keyplane vault
rotate-master`` runs as its own process while the server (configured with both keys) is up.
The scanner is the one of the key scan (raw, hex and base64 at every alignment).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keyplane.domain.envelope import Keyring, MasterKey, credential_aad, unseal
from keyplane.errors import VaultKeyError
from tests.conftest import ROOT_KEY, SERVER_SECRET
from tests.e2e.conftest import Server, ServerFactory, run_cli
from tests.e2e.test_secret_scan import Scanner, encodings

pytestmark = pytest.mark.e2e

SINGLE = 24
BULK = 12
UPDATED = 6


def _secret(label: str) -> str:
    return f"sk-proj-{label}-{secrets.token_urlsafe(30)}"


async def _exercise(server: Server) -> list[str]:
    """Every vault call that handles a secret; returns every secret the server was given."""
    given: list[str] = []
    async with server.async_client() as client:

        async def call(method: str, url: str, status: int, **kwargs: Any) -> dict[str, Any]:
            response = await client.request(method, url, **kwargs)
            assert response.status_code == status, response.text
            body: dict[str, Any] = response.json()
            return body

        ids = []
        for n in range(SINGLE):
            secret = _secret(f"one{n}")
            given.append(secret)
            body = {
                "provider": "OpenAI" if n % 2 else "anthropic",
                "alias": f"scan-{n}",
                "secret": secret,
                "environment": "production",
                "tags": ["scan"],
                "metadata": {"billing": {"tier": "enterprise"}, "n": n},
                "max_concurrent": 3,
            }
            created = await call("POST", "/v1/vault/credentials", 201, json=body)
            assert secret not in str(created)
            ids.append(created["data"]["id"])
        bulk = [_secret(f"bulk{n}") for n in range(BULK)]
        given.extend(bulk)
        await call(
            "POST",
            "/v1/vault/credentials/bulk",
            201,
            json={
                "credentials": [
                    {"provider": "custom", "alias": f"bulk-{n}", "secret": s}
                    for n, s in enumerate(bulk)
                ]
            },
        )
        for credential_id in ids[:UPDATED]:
            secret = _secret("updated")
            given.append(secret)
            await call(
                "PATCH", f"/v1/vault/credentials/{credential_id}", 200, json={"secret": secret}
            )
        listed = await call("GET", "/v1/vault/credentials?limit=100", 200)
        assert len(listed["data"]) == SINGLE + BULK
        await call("GET", f"/v1/vault/credentials/{ids[0]}", 200)

        # Leases hand secrets out: with every outcome, so they pass through the release path.
        for outcome in ("ok", "rate_limited", "unauthorized", None):
            leased = await call(
                "POST",
                "/v1/vault/leases",
                201,
                json={"provider": "openai", "metadata_filter": {"billing.tier": "enterprise"}},
            )
            assert leased["secret"] in given
            body = None if outcome is None else {"outcome": outcome, "retry_after": 5}
            await call("DELETE", f"/v1/vault/leases/{leased['lease_id']}", 200, json=body)

        # Bad input that carries a secret must not echo it (error bodies reach logs too).
        for bad in (
            {"provider": "OpenAl", "alias": "typo", "secret": _secret("bad1")},
            {"provider": "openai", "alias": "", "secret": _secret("bad2")},
            {"provider": "openai", "alias": "x", "secret": _secret("bad3"), "weight": -1},
            {"provider": "openai", "alias": "x", "secret": _secret("bad4"), "extra": 1},
        ):
            given.append(bad["secret"])
            response = await client.post("/v1/vault/credentials", json=bad)
            assert 400 <= response.status_code < 500, response.text
            assert bad["secret"] not in response.text
    return given


def _material(key: MasterKey) -> bytes:
    return base64.b64decode(key.to_base64())


def _tokens(database: Path) -> dict[str, tuple[str, str, str]]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "select id, org_id, sealed_secret, master_key_id from vault_credentials"
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_no_vault_secret_or_master_key_in_the_database_or_the_logs(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    database = tmp_path / "db" / "keyplane.db"
    old, new = MasterKey.generate(), MasterKey.generate()
    old_file = tmp_path / "old.key"
    old_file.write_text(old.to_base64() + "\n")
    old_file.chmod(0o600)
    env = {
        "KEYPLANE_DATABASE_URL": f"sqlite:///{database}",
        "KEYPLANE_SECRET": SERVER_SECRET,
        "KEYPLANE_ROOT_KEY": ROOT_KEY,
        "KEYPLANE_LOG_LEVEL": "debug",
    }
    first = start_server({**env, "KEYPLANE_VAULT_KEY_FILE": str(old_file)})
    given = asyncio.run(_exercise(first))
    first.stop_cleanly()

    # Rotation while a server (with the new key current and the old one readable) serves.
    both = {
        **env,
        "KEYPLANE_VAULT_KEY": new.to_base64(),
        "KEYPLANE_VAULT_PREVIOUS_KEYS": old.to_base64(),
    }
    second = start_server(both)
    rotated = run_cli(
        "vault",
        "rotate-master",
        "--old-key-file",
        str(old_file),
        "--batch-size",
        "7",
        env={**env, "KEYPLANE_VAULT_KEY": new.to_base64()},
        cwd=tmp_path,
    )
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert f"re-wrapped {SINGLE + BULK} credentials to master key {new.key_id}" in rotated.stdout
    with second.client() as client:
        leased = client.post("/v1/vault/leases", json={"provider": "custom"})
        assert leased.status_code == 201, leased.text
        assert leased.json()["secret"] in given
    live_files = {
        f"live:{path.relative_to(tmp_path)}": path.read_bytes()
        for path in sorted(database.parent.iterdir())
        if path.is_file()
    }
    second.stop_cleanly()
    (tmp_path / "rotate.stdout.log").write_text(rotated.stdout)
    (tmp_path / "rotate.stderr.log").write_text(rotated.stderr)

    # Every stored secret opens with the new key alone, and none with the old key alone.
    tokens = _tokens(database)
    assert len(tokens) == SINGLE + BULK
    opened = set()
    for credential_id, (org_id, token, key_id) in tokens.items():
        assert key_id == new.key_id
        aad = credential_aad(org_id, credential_id)
        opened.add(unseal(Keyring(new), token, aad))
        with pytest.raises(VaultKeyError):
            unseal(Keyring(old), token, aad)
    assert opened <= set(given)
    assert len(opened) == SINGLE + BULK

    files = {
        str(path.relative_to(tmp_path)): path.read_bytes()
        for path in sorted(tmp_path.rglob("*"))
        if path.is_file() and not path.name.endswith(".key")
    }
    scanned = {**files, **live_files}
    database_bytes = b"".join(d for name, d in scanned.items() if "keyplane.db" in name)
    logs = b"".join(d for name, d in scanned.items() if name.endswith(".log"))
    # The scan looks at the right bytes: the tokens are in the database files, the requests
    # in the logs.
    assert all(token.encode() in database_bytes for _, token, _ in tokens.values())
    assert logs.count(b'"msg": "POST /v1/vault/credentials ') >= SINGLE
    assert b"vault" in logs

    master_texts = [
        text
        for key in (old, new)
        for text in (key.to_base64(), base64.urlsafe_b64encode(_material(key)).decode())
    ]
    scanner = Scanner([*given, *master_texts])
    findings = [f for name, data in scanned.items() for f in scanner.scan(name, data)]
    assert findings == [], "\n".join(f"{f.file}: {f.form} of {f.secret_start}..." for f in findings)
    for key in (old, new):
        material = _material(key)
        assert not any(material in data for data in scanned.values())
        assert not any(material.hex().encode() in data for data in scanned.values())

    # Self-check: the same scan sees a secret planted in those bytes.
    for form, needle in encodings(given[0]).items():
        planted = database_bytes[:100] + needle + database_bytes[100:]
        assert form in {f.form for f in scanner.scan("planted", planted)}
