"""``?wait=confirmed`` across real instances on one PostgreSQL schema: every live instance
confirms dropping the key before the call returns, and a paused one is named, not waited for
past the timeout.

Instances are named with ``KEYPLANE_INSTANCE_ID`` so the answers can be checked by name. The
registry is Redis, or PostgreSQL itself when there is no Redis.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
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
    start_server: ServerFactory,
    backend: Backend,
    count: int,
    registry: str,
    eviction_wait: str | None = None,
) -> list[Server]:
    env: dict[str, str | None] = {
        **backend.env,
        "KEYPLANE_INSTANCE_LIVENESS_SECONDS": "60",
        "KEYPLANE_EVICTION_WAIT_SECONDS": eviction_wait,
    }
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
    # A write's own wait for the others (KEYPLANE_EVICTION_WAIT_SECONDS) far longer than the
    # confirmation's: a confirmed write must not wait out both, one after the other.
    servers = _start(start_server, postgres_backend, 3, "redis", eviction_wait="30")
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
            assert time.monotonic() - started < 2 * (timeout + 10)  # not the 30 s wait either
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


def _in_thread(call: Callable[[], int]) -> tuple[threading.Thread, list[int]]:
    answers: list[int] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


@pytest.mark.parametrize("registry", ["redis", "postgres"])
def test_without_wait_a_revoke_answers_only_once_every_other_instance_applied_it(
    start_server: ServerFactory, postgres_backend: Backend, registry: str
) -> None:
    """The default, no ``?wait``: a revoke does not answer while another live instance has not
    applied its eviction, so the first use there after the answer is refused, every time.

    Publishing alone left a window (the eviction in the other instance's socket, the client's
    next request served first): a revoked management key was accepted once more in 1 of 60
    trials on a loaded CI machine. Here the other instance is paused, which widens that window
    to as long as the pause: the revoke must still be waiting when it ends.
    """
    servers = _start(start_server, postgres_backend, 2, registry, eviction_wait="30")
    writer, other = servers
    key, key_id, secret, mk_id = _cached_everywhere(servers)
    for path, check in (
        (f"/v1/keys/{key_id}", lambda: _verify_code(other, key) == "REVOKED"),
        (f"/v1/management-keys/{mk_id}", lambda: _status_with(other, secret) == 401),
    ):
        with writer.client() as http:
            os.kill(other.process.pid, signal.SIGSTOP)
            try:
                thread, answers = _in_thread(lambda path=path: http.delete(path).status_code)
                thread.join(1.5)
                assert thread.is_alive(), f"{path}: answered while the other instance was paused"
            finally:
                os.kill(other.process.pid, signal.SIGCONT)
                thread.join(60)
        assert answers == [200], path
        assert check(), f"{path}: still accepted by the other instance after the answer"


def _verify_code(server: Server, key: str) -> str:
    with server.client() as http:
        return str(http.post("/v1/verify", json={"key": key}).json()["code"])


def _status_with(server: Server, secret: str) -> int:
    with server.client(secret) as http:
        return http.get("/v1/keys", params={"limit": 1}).status_code
