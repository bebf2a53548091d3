"""``?wait=confirmed`` across real instances on one PostgreSQL schema: every live instance
confirms dropping the key before the call returns, and a paused one is named, not waited for
past the timeout.

Instances are named with ``KEYPLANE_INSTANCE_ID`` so the answers can be checked by name. The
registry is Redis, or PostgreSQL itself when there is no Redis.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, require_postgres, require_redis
from tests.e2e.conftest import Backend, Server, ServerFactory, make_backend

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

NAMES = ("alpha", "bravo", "charlie")


@pytest.fixture
def postgres_backend(tmp_path: Path) -> Iterator[Backend]:
    require_postgres()
    with make_backend("postgres", tmp_path) as backend:
        yield backend


def _start(
    start_server: ServerFactory, backend: Backend, count: int, registry: str
) -> list[Server]:
    env: dict[str, str | None] = {**backend.env, "KEYPLANE_INSTANCE_LIVENESS_SECONDS": "60"}
    if registry == "redis":
        require_redis()
        env["KEYPLANE_REDIS_URL"] = REDIS_URL
    return [start_server({**env, "KEYPLANE_INSTANCE_ID": name}) for name in NAMES[:count]]


def _cached_everywhere(servers: list[Server]) -> tuple[str, str, str, str]:
    """An API key and a management key, each used once on every instance (so cached)."""
    with servers[0].client() as http:
        made = http.post("/v1/keys", json={"name": "k"})
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["data"]["id"]
        made = http.post("/v1/management-keys", json={"name": "m", "scopes": ["keys:read"]})
        assert made.status_code == 201, made.text
        secret, mk_id = made.json()["key"], made.json()["data"]["id"]
    for server in servers:
        with server.client() as http:
            assert http.post("/v1/verify", json={"key": key}).json()["code"] == "VALID"
        with server.client(secret) as http:
            assert http.get("/v1/keys", params={"limit": 1}).status_code == 200
    return key, key_id, secret, mk_id


def _refused_everywhere_at_once(servers: list[Server], key: str, code: str) -> None:
    for server in servers:
        with server.client() as http:
            assert http.post("/v1/verify", json={"key": key}).json()["code"] == code, server.name


@pytest.mark.parametrize(
    ("count", "registry"), [(2, "redis"), (3, "redis"), (2, "postgres"), (3, "postgres")]
)
def test_every_live_instance_confirms_before_the_call_returns(
    start_server: ServerFactory, postgres_backend: Backend, count: int, registry: str
) -> None:
    servers = _start(start_server, postgres_backend, count, registry)
    names = sorted(NAMES[:count])
    confirmed = {"confirmed": names, "unconfirmed": [], "complete": True}

    key, key_id, secret, mk_id = _cached_everywhere(servers)
    with servers[-1].client() as http:
        answer = http.post(f"/v1/keys/{key_id}/disable", params={"wait": "confirmed"}, json={})
    assert answer.status_code == 200, answer.text
    assert answer.json()["confirmation"].items() >= confirmed.items(), answer.json()
    _refused_everywhere_at_once(servers, key, "DISABLED")

    with servers[0].client() as http:
        answer = http.delete(f"/v1/keys/{key_id}", params={"wait": "confirmed", "timeout": 30})
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["status"] == "revoked"
        assert answer.json()["confirmation"].items() >= confirmed.items(), answer.json()
        _refused_everywhere_at_once(servers, key, "REVOKED")

        answer = http.delete(f"/v1/management-keys/{mk_id}", params={"wait": "confirmed"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["confirmation"].items() >= confirmed.items(), answer.json()
    for server in servers:
        with server.client(secret) as http:
            assert http.get("/v1/keys", params={"limit": 1}).status_code == 401, server.name

    # An instance that stopped cleanly left the registry: nobody waits for it.
    servers[-1].stop_cleanly()
    key, key_id, _, _ = _cached_everywhere(servers[:-1])
    with servers[0].client() as http:
        answer = http.delete(f"/v1/keys/{key_id}", params={"wait": "confirmed", "timeout": 30})
    assert answer.json()["confirmation"]["confirmed"] == names[:-1]
    assert answer.json()["confirmation"]["complete"] is True


def test_a_paused_instance_is_named_unconfirmed_and_refuses_the_key_once_resumed(
    start_server: ServerFactory, postgres_backend: Backend
) -> None:
    servers = _start(start_server, postgres_backend, 3, "redis")
    paused = servers[2]
    key, key_id, secret, mk_id = _cached_everywhere(servers)
    timeout = 3.0
    os.kill(paused.process.pid, signal.SIGSTOP)
    try:
        with servers[0].client() as http:
            started = time.monotonic()
            answer = http.delete(
                f"/v1/keys/{key_id}", params={"wait": "confirmed", "timeout": timeout}
            )
            elapsed = time.monotonic() - started
            assert answer.status_code == 200, answer.text
            assert answer.json()["data"]["status"] == "revoked"  # the revoke happened anyway
            assert answer.json()["confirmation"] == {
                "confirmed": ["alpha", "bravo"],
                "unconfirmed": ["charlie"],
                "complete": False,
                "timeout_seconds": timeout,
                "error": None,
            }
            # It waited out its timeout, and no longer (a generous margin for a loaded machine).
            assert timeout <= elapsed < timeout + 10, elapsed

            answer = http.delete(
                f"/v1/management-keys/{mk_id}", params={"wait": "confirmed", "timeout": timeout}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["confirmation"]["unconfirmed"] == ["charlie"]
        _refused_everywhere_at_once(servers[:2], key, "REVOKED")
    finally:
        os.kill(paused.process.pid, signal.SIGCONT)
    # Resumed, it applies the evictions it was sent while paused.
    with paused.client() as http:
        deadline = time.monotonic() + 10
        while http.post("/v1/verify", json={"key": key}).json()["code"] != "REVOKED":
            assert time.monotonic() < deadline, "the resumed instance still accepts the key"
            time.sleep(0.05)
    with paused.client(secret) as http:
        deadline = time.monotonic() + 10
        while http.get("/v1/keys", params={"limit": 1}).status_code != 401:
            assert time.monotonic() < deadline, "the resumed instance still accepts the mk"
            time.sleep(0.05)
    # Once it has caught up it confirms again: the next confirmed revoke is complete.
    _, key_id, _, _ = _cached_everywhere(servers)
    with servers[1].client() as http:
        answer = http.delete(f"/v1/keys/{key_id}", params={"wait": "confirmed", "timeout": 30})
    assert answer.json()["confirmation"]["complete"] is True
    assert answer.json()["confirmation"]["confirmed"] == ["alpha", "bravo", "charlie"]
