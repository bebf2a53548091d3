"""Several instances on PostgreSQL + Redis: exact global limits and fast cache invalidation."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from keyplane.settings import Settings
from tests.conftest import (
    REDIS_URL,
    ROOT_KEY,
    free_port,
    private_redis,
    require_postgres,
    require_redis,
)
from tests.e2e.conftest import (
    Backend,
    Server,
    ServerFactory,
    make_backend,
    pg_fetch_column,
    run_cli,
)
from tests.e2e.test_enforcement import _read_json, burst_verify

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two instances on one PostgreSQL schema and one Redis."""
    require_postgres()
    require_redis()
    workdir = tmp_path_factory.mktemp("pair")
    with make_backend("postgres", workdir) as backend:
        factory = ServerFactory(workdir)
        env = {**backend.env, "KEYPLANE_REDIS_URL": REDIS_URL}
        try:
            first = factory(env)
            second = factory(env)
            yield first, second
        finally:
            factory.stop_all()


def _create_key(server: Server, policy: dict[str, Any]) -> tuple[str, str]:
    with server.client() as client:
        response = client.post("/v1/keys", json={"name": "shared", "policy": policy})
        assert response.status_code == 201, response.text
        return response.json()["key"], response.json()["data"]["id"]


def _seconds_until(reader: httpx.Client, key: str, code: str, since: float | None = None) -> float:
    """How long until ``reader``'s instance gives ``code`` for ``key`` (a change made elsewhere
    just now, or counted from ``since``, a ``time.monotonic()``); fails after 5 s."""
    changed = time.monotonic() if since is None else since
    while reader.post("/v1/verify", json={"key": key}).json()["code"] != code:
        assert time.monotonic() - changed < 5, f"still {code!r}-less after 5 s"
        time.sleep(0.005)
    return time.monotonic() - changed


def test_a_rate_limit_is_exact_across_two_instances(pair: tuple[Server, Server]) -> None:
    first, second = pair
    for repetition in range(10):
        key, _ = _create_key(first, {"rate_limits": [{"name": "h", "limit": 100, "period": "1h"}]})
        targets = [first if n % 2 else second for n in range(200)]
        verdicts = asyncio.run(burst_verify(targets, [{"key": key}] * 200))
        codes = [v["code"] for v in verdicts]
        assert codes.count("VALID") == 100, (repetition, codes.count("VALID"))
        assert codes.count("RATE_LIMITED") == 100


def test_a_budget_is_exact_across_two_instances(pair: tuple[Server, Server]) -> None:
    first, second = pair
    key, key_id = _create_key(first, {"budget": {"credit_limit": 5.0}})
    targets = [first if n % 2 else second for n in range(1000)]

    verdicts = asyncio.run(burst_verify(targets, [{"key": key, "cost": 0.10}] * 1000))
    valid = [v for v in verdicts if v["code"] == "VALID"]
    assert len(valid) == 50
    for number, verdict in enumerate(valid):
        server = first if number % 2 else second
        with server.client() as client:
            response = client.post(
                "/v1/usage",
                json={"key_id": key_id, "request_id": verdict["request_id"], "cost": 0.03},
            )
            assert response.status_code == 201, response.text
    for server in pair:
        with server.client() as client:
            shown = client.get(f"/v1/keys/{key_id}").json()["data"]
        assert shown["usage"]["total"] == 1.5  # 50 x 0.03, exactly
    # Settled: 5.00 - 1.50 = 3.50 left, whichever instance is asked.
    verdict = asyncio.run(burst_verify([second], [{"key": key, "cost": 3.5}]))[0]
    assert verdict["code"] == "VALID"
    verdict = asyncio.run(burst_verify([first], [{"key": key, "cost": 0.01}]))[0]
    assert verdict["code"] == "BUDGET_EXCEEDED"


#: The cache TTL the pair runs with (the default): an eviction seen well before it came over
#: the channel. The bound below is that, not a latency target: "under 1 s" failed when two
#: suites shared two cores, for reasons that have nothing to do with the channel.
DEFAULT_CACHE_TTL: float = Settings.model_fields["cache_ttl_seconds"].default
CHANNEL_BOUND = 5.0
# prometheus_client writes counters as floats ("3.0").
FALLBACKS = r"^keyplane_limits_fallback_total (\d+)(?:\.0)?$"
STATE_LOST = r"^keyplane_limits_state_lost_total (\d+)(?:\.0)?$"


def test_revocation_on_one_instance_is_refused_on_the_other_long_before_the_cache_ttl(
    pair: tuple[Server, Server],
) -> None:
    first, second = pair
    delays = []
    with first.client() as writer, second.client() as reader:
        for trial in range(50):
            key, key_id = _create_key(first, {})
            assert reader.post("/v1/verify", json={"key": key}).json()["code"] == "VALID"
            if trial % 2:
                response = writer.delete(f"/v1/keys/{key_id}")
                expected = "REVOKED"
            else:
                response = writer.post(f"/v1/keys/{key_id}/disable", json={})
                expected = "DISABLED"
            assert response.status_code == 200
            delays.append(_seconds_until(reader, key, expected))
    assert max(delays) < CHANNEL_BOUND < DEFAULT_CACHE_TTL, sorted(delays)[-5:]


#: Revoke-then-use trials per key kind. On the code before the fix a revoked management key
#: was accepted once more by the other instance in 2 of 15 trials in the security review and
#: in 18 of 60 here; at the review's rate 60 trials all miss it with odds below 1 in 5,000.
REVOKE_TRIALS = 60


def test_a_revoked_management_key_is_refused_by_the_other_instance_once_revoke_returns(
    pair: tuple[Server, Server],
) -> None:
    """No grace window at all: the first use after the revoke call returned is refused."""
    first, second = pair
    accepted = []
    with first.client() as writer:
        for trial in range(REVOKE_TRIALS):
            made = writer.post(
                "/v1/management-keys", json={"name": f"t{trial}", "scopes": ["keys:read"]}
            )
            assert made.status_code == 201, made.text
            secret, key_id = made.json()["key"], made.json()["data"]["id"]
            with second.client(secret) as holder:
                assert holder.get("/v1/keys", params={"limit": 1}).status_code == 200  # cached
                assert writer.delete(f"/v1/management-keys/{key_id}").status_code == 200
                if holder.get("/v1/keys", params={"limit": 1}).status_code != 401:
                    accepted.append(trial)
    assert accepted == [], f"accepted after revoke in {len(accepted)} of {REVOKE_TRIALS} trials"


def test_a_revoked_api_key_is_refused_by_the_other_instance_once_revoke_returns(
    pair: tuple[Server, Server],
) -> None:
    first, second = pair
    accepted = []
    with first.client() as writer, second.client() as reader:
        for trial in range(REVOKE_TRIALS):
            key, key_id = _create_key(first, {})
            assert reader.post("/v1/verify", json={"key": key}).json()["code"] == "VALID"
            assert writer.delete(f"/v1/keys/{key_id}").status_code == 200
            if reader.post("/v1/verify", json={"key": key}).json()["code"] != "REVOKED":
                accepted.append(trial)
    assert accepted == [], f"accepted after revoke in {len(accepted)} of {REVOKE_TRIALS} trials"


def test_without_redis_postgres_notify_carries_evictions_between_instances(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    require_postgres()
    with make_backend("postgres", tmp_path) as backend:
        first, second = start_server(backend.env), start_server(backend.env)
        delays = []
        with first.client() as writer, second.client() as reader:
            for _ in range(10):
                key, key_id = _create_key(first, {})
                assert reader.post("/v1/verify", json={"key": key}).json()["code"] == "VALID"
                assert writer.delete(f"/v1/keys/{key_id}").status_code == 200
                delays.append(_seconds_until(reader, key, "REVOKED"))
        assert max(delays) < CHANNEL_BOUND < DEFAULT_CACHE_TTL, sorted(delays)


def test_several_workers_are_refused_on_sqlite(tmp_path: Path, backend_sqlite: Backend) -> None:
    result = run_cli("serve", "--workers", "2", env=backend_sqlite.env, cwd=tmp_path)
    assert result.returncode == 2
    assert "several workers need PostgreSQL" in result.stderr
    assert "Redis" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def backend_sqlite(tmp_path: Path) -> Iterator[Backend]:
    with make_backend("sqlite", tmp_path) as backend:
        yield backend


def test_a_redis_outage_causes_no_5xx_and_counters_come_back_from_the_ledger(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    require_postgres()
    port = free_port()
    with make_backend("postgres", tmp_path) as backend, private_redis(port, tmp_path) as restart:
        env = {
            **backend.env,
            "KEYPLANE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "KEYPLANE_RESERVATION_TIMEOUT_SECONDS": "2",
            "KEYPLANE_EXPECTED_INSTANCES": "2",
        }
        servers = [start_server(env), start_server(env)]
        key, key_id = _create_key(servers[0], {"budget": {"credit_limit": 100}})
        statuses: list[int] = []
        stop_at = time.monotonic() + 6

        async def client(server: Server, number: int) -> None:
            async with server.async_client(max_connections=2) as http:
                sequence = 0
                while time.monotonic() < stop_at:
                    sequence += 1
                    verdict = await http.post("/v1/verify", json={"key": key, "cost": 0.01})
                    statuses.append(verdict.status_code)
                    if verdict.status_code != 200 or verdict.json()["code"] != "VALID":
                        continue
                    report = await http.post(
                        "/v1/usage",
                        json={
                            "key_id": key_id,
                            "request_id": verdict.json()["request_id"],
                            "cost": 0.01,
                        },
                    )
                    statuses.append(report.status_code)

        async def outage() -> None:
            await asyncio.sleep(2)
            subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False)
            await asyncio.sleep(2)
            restart()

        async def run() -> None:
            await asyncio.gather(outage(), *(client(servers[n % 2], n) for n in range(8)))

        asyncio.run(run())
        assert statuses, "no traffic"
        logs = servers[0].stderr + servers[1].stderr
        assert [s for s in statuses if s >= 500] == [], logs
        assert "Redis unreachable" in logs  # the fallback did serve, and said so
        assert "Redis reachable again" in logs
        # Idle instances notice Redis is back: waited for, not slept for (a fixed 3 s raced a
        # loaded machine).
        deadline = time.monotonic() + 30
        while True:
            texts = []
            for server in servers:
                with server.client(key=None) as http:
                    texts.append(http.get("/metrics").text)
            if all("keyplane_limits_degraded 0" in text for text in texts):
                break  # back on Redis
            assert time.monotonic() < deadline, texts
            time.sleep(0.2)
        fallbacks = 0
        for text in texts:
            sample = re.search(
                r"^keyplane_limits_fallback_total (\d+)(?:\.0)?$", text, re.MULTILINE
            )
            assert sample is not None, text
            fallbacks += int(sample.group(1))
        assert fallbacks > 0
        with servers[1].client() as http:
            spent = http.get(f"/v1/keys/{key_id}").json()["data"]["usage"]["total"]
        left = round(100 - spent, 2)
        # The shared counter agrees with the ledger to the micro-credit, on either instance,
        # once the reservations held through the outage have timed out (2 s, swept every
        # second): waited for, up to 30 s, where a fixed 3 s sleep assumed a fast machine.
        deadline = time.monotonic() + 30
        while True:
            verdicts = asyncio.run(burst_verify([servers[0]], [{"key": key, "cost": left}]))
            if verdicts[0]["code"] != "BUDGET_EXCEEDED" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert verdicts[0]["code"] == "VALID", (left, verdicts[0])
        verdicts = asyncio.run(burst_verify([servers[1]], [{"key": key, "cost": 0.01}]))
        assert verdicts[0]["code"] == "BUDGET_EXCEEDED"


def test_with_the_channel_cut_a_revocation_is_seen_within_the_cache_ttl(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    """B listens on a Redis that A never publishes to: only revalidation can save it."""
    require_postgres()
    require_redis()
    port = free_port()
    with make_backend("postgres", tmp_path) as backend, private_redis(port, tmp_path):
        ttl = {"KEYPLANE_CACHE_TTL_SECONDS": "1"}
        first = start_server({**backend.env, **ttl, "KEYPLANE_REDIS_URL": REDIS_URL})
        second = start_server(
            {**backend.env, **ttl, "KEYPLANE_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        )
        delays = []
        with first.client() as writer, second.client() as reader:
            for _ in range(5):
                key, key_id = _create_key(first, {})
                # Counted from before B caches the key: its entry cannot expire sooner than
                # the TTL after this, whatever the machine's speed.
                cached_at = time.monotonic()
                assert reader.post("/v1/verify", json={"key": key}).json()["code"] == "VALID"
                assert writer.delete(f"/v1/keys/{key_id}").status_code == 200
                delays.append(_seconds_until(reader, key, "REVOKED", since=cached_at))
        # It really waited for the entry to expire: no message reached B. (This was
        # "max(delays) > 0.05" after the delete, which a slow delete could fail.)
        assert min(delays) >= 1 - 0.01, sorted(delays)
        # And it was revalidated once the 1 s TTL passed, not never. The margin is for two
        # suites on two cores (0.5 s was a timing assumption under a second).
        assert max(delays) < 1 + 3, sorted(delays)


def test_kill_9_of_one_instance_loses_no_acknowledged_report_or_write(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    require_postgres()
    require_redis()
    with make_backend("postgres", tmp_path) as backend:
        env = {**backend.env, "KEYPLANE_REDIS_URL": REDIS_URL}
        servers = [start_server(env), start_server(env)]
        _, key_id = _create_key(servers[0], {"budget": {"credit_limit": 1000}})
        acknowledged: set[str] = set()
        created: set[str] = set()  # management writes: keys whose create was answered 201

        async def stream() -> None:
            async def sender(server: Server, number: int) -> None:
                async with server.async_client(max_connections=2) as http:
                    for sequence in range(5_000):
                        idempotency_key = f"s{number}-{sequence}"
                        try:
                            response = await http.post(
                                "/v1/usage",
                                json={
                                    "key_id": key_id,
                                    "request_id": idempotency_key,
                                    "cost": 0.01,
                                },
                            )
                        except httpx.HTTPError:
                            return  # that instance is gone
                        assert response.status_code == 201, response.text
                        acknowledged.add(idempotency_key)
                        if sequence % 10 == 0:
                            try:
                                made = await http.post("/v1/keys", json={"name": idempotency_key})
                            except httpx.HTTPError:
                                return
                            assert made.status_code == 201, made.text
                            created.add(made.json()["data"]["id"])
                        if len(acknowledged) >= 600:
                            return

            async def killer() -> None:
                while len(acknowledged) < 200:
                    await asyncio.sleep(0.01)
                servers[0].process.send_signal(signal.SIGKILL)

            await asyncio.gather(killer(), *(sender(servers[n % 2], n) for n in range(8)))

        asyncio.run(stream())
        stored = {
            str(row)
            for row in asyncio.run(
                pg_fetch_column(
                    f'SELECT idempotency_key FROM "{backend.schema}".usage_events'  # noqa: S608
                )
            )
        }
        assert len(acknowledged) >= 200
        assert acknowledged <= stored, f"lost {len(acknowledged - stored)} acknowledged reports"
        keys = {
            str(row)
            for row in asyncio.run(
                pg_fetch_column(f'SELECT id FROM "{backend.schema}".api_keys')  # noqa: S608
            )
        }
        assert len(created) >= 20
        assert created <= keys, f"lost {len(created - keys)} acknowledged key creates"
        with servers[1].client() as http:
            shown = http.get(f"/v1/keys/{key_id}").json()["data"]
        assert round(shown["usage"]["total"] * 100) == len(stored)


def test_a_redis_flush_loses_no_spending(tmp_path: Path, start_server: ServerFactory) -> None:
    require_postgres()
    port = free_port()
    with make_backend("postgres", tmp_path) as backend, private_redis(port, tmp_path):
        env = {**backend.env, "KEYPLANE_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        first, second = start_server(env), start_server(env)
        key, key_id = _create_key(first, {"budget": {"credit_limit": 1.0}})
        for number in range(4):
            server = (first, second)[number % 2]
            verdict = asyncio.run(burst_verify([server], [{"key": key, "cost": 0.1}]))[0]
            assert verdict["code"] == "VALID"
            with server.client() as http:
                response = http.post(
                    "/v1/usage",
                    json={"key_id": key_id, "request_id": verdict["request_id"], "cost": 0.1},
                )
                assert response.status_code == 201
        subprocess.run(["redis-cli", "-p", str(port), "flushall"], check=True, capture_output=True)
        # Counters are gone; they come back from the ledger: 0.4 spent, 0.6 left.
        assert asyncio.run(burst_verify([second], [{"key": key, "cost": 0.61}]))[0]["code"] == (
            "BUDGET_EXCEEDED"
        )
        assert asyncio.run(burst_verify([first], [{"key": key, "cost": 0.6}]))[0]["code"] == (
            "VALID"
        )


@pytest.mark.parametrize("after_loss", ["fail_closed", "reseed"])
def test_a_redis_restart_forgets_no_month_window_and_no_slot(
    tmp_path: Path, start_server: ServerFactory, after_loss: str
) -> None:
    """Two instances, a used-up 100-per-30-days window and full concurrency, Redis killed and
    started again empty: neither instance admits anything more (fail_closed, the default; or
    reseed, once the window's state is in the database)."""
    require_postgres()
    port = free_port()
    with make_backend("postgres", tmp_path) as backend, private_redis(port, tmp_path) as restart:
        env = {
            **backend.env,
            "KEYPLANE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "KEYPLANE_LIMITS_AFTER_REDIS_LOSS": after_loss,
            "KEYPLANE_LIMIT_WINDOWS_FLUSH_SECONDS": "0.2",
            # While the instances reconnect, refuse rather than fall back (a separate bound).
            "KEYPLANE_LIMITS_ON_REDIS_FAILURE": "closed",
            "KEYPLANE_REDIS_MAX_CONNECTIONS": "4",
        }
        servers = [start_server(env), start_server(env)]
        month, _ = _create_key(
            servers[0], {"rate_limits": [{"name": "month", "limit": 100, "period": "30d"}]}
        )
        slots, _ = _create_key(servers[0], {"concurrency": {"max_parallel": 5}})
        warm, _ = _create_key(
            servers[0], {"rate_limits": [{"name": "warm", "limit": 10**6, "period": "1m"}]}
        )
        targets = [servers[n % 2] for n in range(120)]
        burst_start = time.time()
        codes = [v["code"] for v in asyncio.run(burst_verify(targets, [{"key": month}] * 120))]
        assert codes.count("VALID") == 100
        held = {"key": slots, "acquire_concurrency": True}
        codes = [v["code"] for v in asyncio.run(burst_verify(targets[:8], [held] * 8))]
        assert codes.count("VALID") == 5
        if after_loss == "reseed":
            # Wait for the instance that admitted the 100th request to write the window: it is
            # full again 30 days after the burst (the 99th: 7.2 hours less).
            table = f'"{backend.schema}".limit_windows'
            query = f"SELECT until_us FROM {table} WHERE \"window\" <> ''"  # noqa: S608
            full_at = int((burst_start + 30 * 86_400 - 3600) * 1_000_000)
            deadline = time.monotonic() + 10
            while not [u for u in asyncio.run(pg_fetch_column(query)) if int(str(u)) >= full_at]:
                assert time.monotonic() < deadline, "the window never reached the database"
                time.sleep(0.1)

        restart()
        for server in servers:
            _wait_until_back_on_redis(server, warm)
        verdicts = asyncio.run(burst_verify(targets, [{"key": month}] * 120))
        verdicts += asyncio.run(burst_verify(targets[:8], [held] * 8))
        assert [v["code"] for v in verdicts].count("VALID") == 0  # 100 + 5 before the fix
        assert {v["code"] for v in verdicts[:120]} == {"RATE_LIMITED"}
        logs = servers[0].stderr + servers[1].stderr
        assert {v["code"] for v in verdicts[120:]} == {"CONCURRENCY_EXCEEDED"}, logs
        lost = 0
        for server in servers:
            with server.client(key=None) as http:
                text = http.get("/metrics").text
            sample = re.search(
                r"^keyplane_limits_state_lost_total (\d+)(?:\.0)?$", text, re.MULTILINE
            )
            assert sample is not None, text
            lost += int(sample.group(1))
        assert lost == 2  # two keys, each found lost once (by one instance or the other)


def _wait_until_back_on_redis(server: Server, key: str) -> None:
    """Verify ``key`` (on Redis: no loss to find) until a round of them needs no fallback:
    every pooled connection that died with the old Redis has then been replaced."""

    def fallbacks() -> tuple[bool, int]:
        with server.client(key=None) as http:
            text = http.get("/metrics").text
        sample = re.search(FALLBACKS, text, re.MULTILINE)
        assert sample is not None, text
        return "keyplane_limits_degraded 0" in text, int(sample.group(1))

    deadline = time.monotonic() + 10
    while True:
        before = fallbacks()[1]
        asyncio.run(burst_verify([server] * 8, [{"key": key}] * 8))
        back, after = fallbacks()
        if back and after == before:
            return
        assert time.monotonic() < deadline, "still falling back 10 s after the restart"
        time.sleep(0.2)


def test_queued_verifies_are_exact_and_first_come_first_served_across_two_instances(
    pair: tuple[Server, Server],
) -> None:
    """1,000 verifies for 5 slots and 20 places in line, half on each instance: exactly 5 hold,
    20 wait, 975 are refused at once; each reported slot goes to the oldest waiter (the line is
    read from Redis), whichever instance waits and whichever one got the report."""
    first, second = pair
    policy = {"concurrency": {"max_parallel": 5, "max_queued": 20}}
    key, key_id = _create_key(first, policy)
    servers = [first if n % 2 else second for n in range(1000)]
    bodies = [
        {"key": key, "acquire_concurrency": True, "request_id": f"q{n}", "wait_ms": 30_000}
        for n in range(1000)
    ]
    asyncio.run(_queue_scenario(servers, bodies, key_id))


async def _queue_scenario(servers: list[Server], bodies: list[dict[str, Any]], key_id: str) -> None:
    connections = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", server.port) for server in servers)
    )
    redis = Redis.from_url(REDIS_URL)
    try:
        for (_, writer), body in zip(connections, bodies, strict=True):
            payload = json.dumps(body).encode()
            writer.write(
                b"POST /v1/verify HTTP/1.1\r\nHost: keyplane\r\n"
                + f"Authorization: Bearer {ROOT_KEY}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
        await asyncio.gather(*(writer.drain() for _, writer in connections))
        tasks = {
            body["request_id"]: asyncio.ensure_future(_read_json(reader))
            for (reader, _), body in zip(connections, bodies, strict=True)
        }

        async def settled(count: int) -> None:
            async with asyncio.timeout(25):
                while sum(task.done() for task in tasks.values()) < count:
                    pending = [task for task in tasks.values() if not task.done()]
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)

        await settled(980)
        done = {rid: task.result() for rid, task in tasks.items() if task.done()}
        holders = [rid for rid, verdict in done.items() if verdict["code"] == "VALID"]
        refused = [verdict for verdict in done.values() if verdict["code"] != "VALID"]
        assert len(holders) == 5
        assert {v["code"] for v in refused} == {"CONCURRENCY_EXCEEDED"}
        assert {v["retry_after"] for v in refused} == {1.0}
        members = await redis.zrange(f"kp:{{{key_id}}}:queue", 0, -1)
        line = [m.decode().partition("|")[2].rpartition("#")[0] for m in members]
        assert sorted(line) == sorted(set(tasks) - set(done))
        handed = []
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ROOT_KEY}"}) as client:
            for turn in range(20):
                server = servers[turn]
                report = {"key_id": key_id, "request_id": holders.pop(0), "cost": 0}
                response = await client.post(f"{server.base_url}/v1/usage", json=report)
                assert response.status_code == 201, response.text
                await settled(981 + turn)
                (newest,) = [rid for rid, t in tasks.items() if t.done() and rid not in done]
                done[newest] = tasks[newest].result()
                assert done[newest]["code"] == "VALID", done[newest]
                holders.append(newest)
                handed.append(newest)
        assert handed == line
    finally:
        await redis.aclose()
        for _, writer in connections:
            writer.close()
