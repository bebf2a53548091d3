"""Acceptance: after creating 1,000 keys and rotating 100, no key plaintext appears anywhere in
the database files (raw, base64 or hex), nor in the logs.

The keys are made by a real ``keyplane serve`` at log level debug, so the logs scanned are the
real process's console output. Every file in the test's directory is scanned: the SQLite
database with its ``-wal`` and ``-shm`` files (also as they were while the server ran) and the
captured stdout/stderr. The root key (``KEYPLANE_ROOT_KEY``) is looked for as well.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyplane.domain.crypto import key_digest
from keyplane.domain.keyformat import SCAN_PATTERN
from tests.conftest import ROOT_KEY, SERVER_SECRET
from tests.e2e.conftest import Server, ServerFactory

pytestmark = pytest.mark.e2e

KEY_COUNT = 1_000
ROTATE_COUNT = 100
MANAGEMENT_KEY_COUNT = 5
CONCURRENCY = 20

# -- the scanner ------------------------------------------------------------------------------

#: Every needle is found by a window of this many characters at its start, then confirmed.
WINDOW = 24
#: Runs of characters any needle can consist of: the key alphabet, hex, and both base64 forms.
_RUN = re.compile(rb"[A-Za-z0-9+/_-]{%d,}" % WINDOW)


def encodings(secret: str) -> dict[str, bytes]:
    """Every form of ``secret`` the scan looks for, by name.

    Base64 depends on where the secret starts relative to a 3-byte group, so it is encoded at
    each of the 3 alignments (behind 0, 1 or 2 filler bytes), keeping only the characters that
    depend on the secret's bytes alone: the first group when it mixes in filler, and the last
    group when it is partial.
    """
    raw = secret.encode("utf-8")
    forms = {
        "raw": raw,
        "hex": raw.hex().encode("ascii"),
        "HEX": raw.hex().upper().encode("ascii"),
    }
    for filler in range(3):
        data = b"\0" * filler + raw
        encoded = base64.b64encode(data)
        start = 4 if filler else 0
        end = len(data) // 3 * 4
        standard = encoded[start:end]
        forms[f"base64@{filler}"] = standard
        forms[f"urlsafe-base64@{filler}"] = standard.translate(bytes.maketrans(b"+/", b"-_"))
    return forms


@dataclass(frozen=True)
class Finding:
    file: str
    form: str
    secret_start: str


class Scanner:
    """Finds any of many secrets, in any of their encodings, in a few megabytes of bytes."""

    def __init__(self, secrets_: Iterable[str]) -> None:
        self.needles: dict[bytes, list[tuple[bytes, str, str]]] = {}
        for secret in secrets_:
            for form, needle in encodings(secret).items():
                assert len(needle) >= WINDOW, (form, secret[:8])
                self.needles.setdefault(needle[:WINDOW], []).append((needle, form, secret[:12]))

    def scan(self, name: str, data: bytes) -> list[Finding]:
        findings: set[Finding] = set()
        for run in _RUN.finditer(data):
            text = run.group()
            for offset in range(len(text) - WINDOW + 1):
                for needle, form, start in self.needles.get(text[offset : offset + WINDOW], ()):
                    if text.startswith(needle, offset):
                        findings.add(Finding(name, form, start))
        return sorted(findings, key=lambda f: (f.file, f.form, f.secret_start))


# -- driving the server -----------------------------------------------------------------------


@dataclass
class Issued:
    plaintexts: list[str]
    current_hashes: list[str]


async def issue_keys(server: Server) -> Issued:
    issued = Issued([], [])
    gate = asyncio.Semaphore(CONCURRENCY)

    async with server.async_client(max_connections=CONCURRENCY) as client:

        async def call(method: str, url: str, status: int, **kwargs: Any) -> dict[str, Any]:
            async with gate:
                response = await client.request(method, url, **kwargs)
            assert response.status_code == status, response.text
            body: dict[str, Any] = response.json()
            return body

        project = await call(
            "POST", "/v1/projects", 201, json={"name": "scan", "key_prefix": "sk-fr"}
        )
        project_id = project["data"]["id"]

        def key_body(n: int) -> dict[str, Any]:
            body: dict[str, Any] = {
                "name": f"scan key {n}",
                "owner": f"cus_{n:04d}",
                "environment": "test" if n % 3 == 0 else "live",
                "tags": ["scan"],
                "metadata": {"n": n},
            }
            if n % 4 == 0:
                body["project_id"] = project_id  # custom prefix: sk-fr_live_... / sk-fr_test_...
            return body

        created = await asyncio.gather(
            *(call("POST", "/v1/keys", 201, json=key_body(n)) for n in range(KEY_COUNT))
        )
        by_id = {item["data"]["id"]: item for item in created}
        assert len(by_id) == KEY_COUNT
        issued.plaintexts.extend(item["key"] for item in created)

        to_rotate = list(by_id)[:: KEY_COUNT // ROTATE_COUNT][:ROTATE_COUNT]
        rotated = await asyncio.gather(
            *(
                call(
                    "POST",
                    f"/v1/keys/{key_id}/rotate",
                    200,
                    json={"grace_period_seconds": 3600 if i % 2 else 0},
                )
                for i, key_id in enumerate(to_rotate)
            )
        )
        assert len(rotated) == ROTATE_COUNT
        issued.plaintexts.extend(item["key"] for item in rotated)
        for item in rotated:
            by_id[item["data"]["id"]] = item

        management = await asyncio.gather(
            *(
                call(
                    "POST",
                    "/v1/management-keys",
                    201,
                    json={"name": f"scan {n}", "scopes": ["keys:read", "verify"]},
                )
                for n in range(MANAGEMENT_KEY_COUNT)
            )
        )
        issued.plaintexts.extend(item["key"] for item in management)
        await call("DELETE", f"/v1/management-keys/{management[0]['data']['id']}", 200)

        # Use the keys the ways a careless client might, so they pass through request handling
        # and the access log: verify (old and new secrets), a key in the URL, an API key or a
        # revoked management key as the bearer token.
        sample = [*issued.plaintexts[:50], *issued.plaintexts[KEY_COUNT:]]
        verdicts = await asyncio.gather(
            *(call("POST", "/v1/verify", 200, json={"key": key}) for key in sample)
        )
        assert {v["code"] for v in verdicts} <= {"VALID", "NOT_FOUND"}
        assert sum(v["code"] == "VALID" for v in verdicts) >= 50
        for key in issued.plaintexts[:5]:
            await call("GET", f"/v1/keys/{key}", 404)
            await call("GET", "/v1/keys", 401, headers={"Authorization": f"Bearer {key}"})
        for item in management[:2]:
            headers = {"Authorization": f"Bearer {item['key']}"}
            await call("GET", "/v1/keys", 401 if item is management[0] else 200, headers=headers)

        issued.current_hashes = [item["data"]["hash"] for item in by_id.values()]
    return issued


# -- the test ---------------------------------------------------------------------------------


def test_scanner_finds_a_planted_secret_in_every_encoding() -> None:
    secret = "sk-fr_live_0123456789abcdefghijABCDEFGHIJklmnop"
    scanner = Scanner([secret])
    for form, needle in encodings(secret).items():
        for pad in (b"", b"x", b"\x00\xff", b"=+/"):
            data = b"\x01some bytes " + pad + needle + b" more"
            assert form in {f.form for f in scanner.scan("plant", data)}, (form, pad)
    # Embedded in real base64 output at any alignment, not just the needle itself.
    for filler in range(3):
        blob = b"A" * filler + b'{"k":"' + secret.encode() + b'"}'
        for encoded in (base64.b64encode(blob), base64.urlsafe_b64encode(blob)):
            assert scanner.scan("plant", b"x" + encoded + b"y"), (filler, encoded)
    # And nothing for a near miss.
    assert scanner.scan("plant", secret[:-1].encode() + b"!") == []


def test_no_key_plaintext_in_the_database_or_the_logs(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    database = tmp_path / "db" / "keyplane.db"
    server = start_server(
        {
            "KEYPLANE_DATABASE_URL": f"sqlite:///{database}",
            "KEYPLANE_SECRET": SERVER_SECRET,
            "KEYPLANE_ROOT_KEY": ROOT_KEY,
            "KEYPLANE_LOG_LEVEL": "debug",
        }
    )
    issued = asyncio.run(issue_keys(server))
    # What is on disk while the server runs (WAL not yet checkpointed) is scanned as well.
    live_files = {
        f"live:{path.relative_to(tmp_path)}": path.read_bytes()
        for path in sorted(database.parent.iterdir())
        if path.is_file()
    }
    server.stop_cleanly()

    plaintexts = issued.plaintexts
    assert len(plaintexts) == KEY_COUNT + ROTATE_COUNT + MANAGEMENT_KEY_COUNT
    assert len(set(plaintexts)) == len(plaintexts)
    assert all(SCAN_PATTERN.fullmatch(key) for key in plaintexts)
    assert sum(key.startswith("sk-fr_") for key in plaintexts) >= KEY_COUNT // 4

    files = {
        str(path.relative_to(tmp_path)): path.read_bytes()
        for path in sorted(tmp_path.rglob("*"))
        if path.is_file()
    }
    database_files = {name: data for name, data in files.items() if "keyplane.db" in name}
    log_files = {name: data for name, data in files.items() if name.endswith(".log")}
    assert "db/keyplane.db" in database_files
    assert "live:db/keyplane.db-wal" in live_files  # WAL mode: recent writes live here first
    assert set(log_files) == {"server-1.stdout.log", "server-1.stderr.log"}

    # The scan looks at the right bytes: the hashes of the keys are there, and the logs are
    # the server's, with one access-log line per request.
    stored = b"".join(database_files.values())
    missing = [h for h in issued.current_hashes if h.encode() not in stored]
    assert missing == [], f"{len(missing)} current key hashes not found in the database files"
    assert all(
        key_digest(SERVER_SECRET.encode(), key).encode() in stored for key in plaintexts[-5:]
    )
    logs = b"".join(log_files.values())
    assert b"Application startup complete" in logs
    assert logs.count(b'"msg": "POST /v1/keys 201"') == KEY_COUNT
    # The keys put in URLs were logged as the route's template only, not dropped.
    assert logs.count(b'"msg": "GET /v1/keys/{id_or_hash} 404"') >= 5

    scanner = Scanner([*plaintexts, ROOT_KEY])
    scanned = {**files, **live_files}
    findings = [f for name, data in scanned.items() for f in scanner.scan(name, data)]
    assert findings == [], "\n".join(f"{f.file}: {f.form} of {f.secret_start}..." for f in findings)

    # Self-check: the same scan over the same bytes does see a plaintext planted in them.
    victim = plaintexts[KEY_COUNT + 1]  # a rotated-in key
    for form, needle in encodings(victim).items():
        planted = stored[: len(stored) // 2] + needle + stored[len(stored) // 2 :]
        assert form in {f.form for f in scanner.scan("planted", planted)}
