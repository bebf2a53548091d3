"""The vault on real ``keyplane serve`` processes.

Two instances share one database (PostgreSQL + Redis, or one SQLite file): a credential's
``max_concurrent`` and ``daily_limit`` hold exactly across both. And no upstream secret, nor
the vault master key, appears in the database files or the server logs.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, ROOT_KEY, SERVER_SECRET, VAULT_KEY, require_redis
from tests.e2e.conftest import BACKENDS, Server, ServerFactory, make_backend
from tests.e2e.test_secret_scan import Scanner, encodings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=BACKENDS)
def vault_pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    """Two instances on one database, with the same vault master key."""
    workdir = tmp_path_factory.mktemp(f"vault-{request.param}")
    with make_backend(request.param, workdir) as backend:
        env = {**backend.env, "KEYPLANE_VAULT_KEY": VAULT_KEY}
        if request.param == "postgres":
            require_redis()
            env["KEYPLANE_REDIS_URL"] = REDIS_URL
        factory = ServerFactory(workdir)
        try:
            yield factory(env), factory(env)
        finally:
            factory.stop_all()


def _add(server: Server, **fields: object) -> str:
    body = {"provider": "openai", "secret": "sk-" + secrets.token_urlsafe(30), **fields}
    with server.client() as client:
        response = client.post("/v1/vault/credentials", json=body)
        assert response.status_code == 201, response.text
        credential_id: str = response.json()["data"]["id"]
        return credential_id


def test_max_concurrent_holds_across_two_instances(vault_pair: tuple[Server, Server]) -> None:
    first, second = vault_pair
    environment = "conc-" + secrets.token_hex(4)
    _add(first, alias="shared", environment=environment, max_concurrent=2)

    async def run() -> int:
        holding = most = 0
        clients = [first.async_client(), second.async_client()]
        full = asyncio.Event()  # set once two hold a lease together

        async def holder(n: int) -> None:
            nonlocal holding, most
            client = clients[n % 2]
            while True:
                response = await client.post(
                    "/v1/vault/leases", json={"provider": "openai", "environment": environment}
                )
                if response.status_code == 201:
                    break
                assert response.status_code == 429, response.text
                assert response.json()["code"] == "ALL_AT_MAX_CONCURRENCY"
                await asyncio.sleep(0.01)
            holding += 1
            most = max(most, holding)
            if holding == 2:
                full.set()
            # Hold until a second holder got in, however slow the machine (a fixed 100 ms
            # assumed SQLite's busy handler would let one in by then); 30 s bounds a hang.
            await asyncio.wait_for(full.wait(), timeout=30)
            await asyncio.sleep(0.01)
            holding -= 1
            # Released on the other instance than the one that leased it.
            other = clients[(n + 1) % 2]
            released = await other.delete(f"/v1/vault/leases/{response.json()['lease_id']}")
            assert released.status_code == 200, released.text

        try:
            await asyncio.gather(*(holder(n) for n in range(50)))
        finally:
            for client in clients:
                await client.aclose()
        return most

    most = asyncio.run(run())
    assert most == 2, f"{most} leases held at once"


def test_a_daily_limit_is_exact_across_two_instances(vault_pair: tuple[Server, Server]) -> None:
    first, second = vault_pair
    environment = "daily-" + secrets.token_hex(4)
    _add(second, alias="limited", environment=environment, daily_limit=100)

    async def run() -> Counter[int]:
        clients = [first.async_client(), second.async_client()]
        try:
            responses = await asyncio.gather(
                *(
                    clients[n % 2].post(
                        "/v1/vault/leases",
                        json={"provider": "openai", "environment": environment},
                    )
                    for n in range(500)
                )
            )
        finally:
            for client in clients:
                await client.aclose()
        return Counter(response.status_code for response in responses)

    assert asyncio.run(run()) == {201: 100, 404: 400}


def test_no_upstream_secret_in_the_database_or_the_logs(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    database = tmp_path / "db" / "keyplane.db"
    server = start_server(
        {
            "KEYPLANE_DATABASE_URL": f"sqlite:///{database}",
            "KEYPLANE_SECRET": SERVER_SECRET,
            "KEYPLANE_ROOT_KEY": ROOT_KEY,
            "KEYPLANE_VAULT_KEY": VAULT_KEY,
            "KEYPLANE_LOG_LEVEL": "debug",
        }
    )
    plaintexts = ["sk-proj-" + secrets.token_urlsafe(36) for _ in range(40)]
    with server.client() as client:
        bulk = client.post(
            "/v1/vault/credentials/bulk",
            json={
                "credentials": [
                    {"provider": "openai", "alias": f"k{n}", "secret": secret}
                    for n, secret in enumerate(plaintexts[:20])
                ]
            },
        )
        assert bulk.status_code == 201, bulk.text
        ids = [item["id"] for item in bulk.json()["data"]]
        for n, secret in enumerate(plaintexts[20:]):
            body = {"provider": "anthropic", "alias": f"a{n}", "secret": secret}
            assert client.post("/v1/vault/credentials", json=body).status_code == 201
        # Update a secret, lease every credential, report outcomes.
        replaced = plaintexts[0]
        plaintexts.append("sk-proj-" + secrets.token_urlsafe(36))
        changed = client.patch(f"/v1/vault/credentials/{ids[0]}", json={"secret": plaintexts[-1]})
        assert changed.status_code == 200
        leased = set()
        for n in range(40):
            provider = "openai" if n < 20 else "anthropic"
            lease = client.post("/v1/vault/leases", json={"provider": provider})
            assert lease.status_code == 201, lease.text
            leased.add(lease.json()["secret"])
            outcome = ["ok", "rate_limited", "unauthorized"][n % 3] if n % 7 == 0 else "ok"
            client.request(
                "DELETE", f"/v1/vault/leases/{lease.json()['lease_id']}", json={"outcome": outcome}
            )
        assert replaced not in leased and plaintexts[-1] in leased
        # A bad request that carries a secret must not echo it either.
        refused = client.post(
            "/v1/vault/credentials",
            json={"provider": "opnai", "alias": "x", "secret": plaintexts[1]},
        )
        assert refused.status_code == 422 and plaintexts[1] not in refused.text
        listed = client.get("/v1/vault/credentials?limit=100")
        assert not any(secret in listed.text for secret in plaintexts)
    live_files = {
        f"live:{path.name}": path.read_bytes()
        for path in sorted(database.parent.iterdir())
        if path.is_file()
    }
    server.stop_cleanly()

    files = {
        str(path.relative_to(tmp_path)): path.read_bytes()
        for path in sorted(tmp_path.rglob("*"))
        if path.is_file()
    }
    stored = b"".join(data for name, data in files.items() if "keyplane.db" in name)
    logs = b"".join(data for name, data in files.items() if name.endswith(".log"))
    # The scan reads the right bytes: sealed tokens in the database, requests in the logs.
    assert stored.count(b"kpv1.") >= 40
    assert b"POST /v1/vault/leases" in logs

    scanner = Scanner([*plaintexts, VAULT_KEY])
    scanned = {**files, **live_files}
    findings = [f for name, data in scanned.items() for f in scanner.scan(name, data)]
    assert findings == [], "\n".join(f"{f.file}: {f.form} of {f.secret_start}..." for f in findings)
    # Self-check: a planted plaintext would have been found.
    for form, needle in encodings(plaintexts[5]).items():
        assert form in {f.form for f in scanner.scan("planted", b"x" + needle + b"y")}
