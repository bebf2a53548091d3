"""Retries, backoff, Idempotency-Key reuse and error mapping, against a real scripted server."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from keyplane.client import (
    APIError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    ConnectionError,
    KeyplaneError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TimeoutError,
    ValidationError,
)
from keyplane.client._core import Config, next_delay, retry_after
from tests.client.conftest import Reply, ScriptedServer
from tests.conftest import free_port

KEY_BODY = {
    "key": "kp_live_secret",
    "data": {
        "id": "key_" + "1" * 26,
        "hash": "h" * 64,
        "start": "kp_live_s",
        "end": "cret",
        "org_id": "org_" + "1" * 26,
        "project_id": "proj_" + "1" * 26,
        "name": "retried",
        "environment": "live",
        "status": "active",
        "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:00:00Z",
        "usage": {"total": 0, "daily": 0, "weekly": 0, "monthly": 0},
        "future_field": "kept, not refused",
    },
}


def problem(status: int, code: str, detail: str = "refused") -> dict[str, object]:
    return {"type": "about:blank", "title": "x", "status": status, "code": code, "detail": detail}


def sync_client(server: ScriptedServer, waits: list[float], **options: object) -> Client:
    return Client(server.url, "kp_mgmt_test", sleep=waits.append, **options)  # type: ignore[arg-type]


def test_a_retried_create_reuses_one_idempotency_key(scripted: ScriptedServer) -> None:
    scripted.script(
        Reply(503, problem(503, "UNAVAILABLE")),
        Reply(0, hang_up=True),
        Reply(201, KEY_BODY, {"Idempotent-Replayed": "true"}),
    )
    waits: list[float] = []
    with sync_client(scripted, waits, max_retries=3) as client:
        created = client.keys.create("retried", owner="o")
    assert created.data.name == "retried" and created.replayed
    assert created.data.model_extra == {"future_field": "kept, not refused"}
    keys = [r.headers.get("idempotency-key") for r in scripted.received]
    assert len(keys) == 3 and keys[0] is not None and len(set(keys)) == 1
    bodies = [json.loads(r.body) for r in scripted.received]
    assert bodies == [{"name": "retried", "owner": "o"}] * 3
    assert scripted.received[0].headers["authorization"] == "Bearer kp_mgmt_test"
    assert len(waits) == 2 and all(0 <= w <= 8 for w in waits)


def test_each_call_gets_its_own_key_and_the_caller_may_choose_it(scripted: ScriptedServer) -> None:
    scripted.script(Reply(201, KEY_BODY), Reply(201, KEY_BODY), Reply(201, KEY_BODY))
    with sync_client(scripted, []) as client:
        client.keys.create("a")
        client.keys.create("a")
        client.keys.create("a", idempotency_key="row-7")
    first, second, third = (r.headers.get("idempotency-key") for r in scripted.received)
    assert first != second and third == "row-7"


def test_gets_carry_no_idempotency_key(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, {"status": "ok"}))
    with sync_client(scripted, []) as client:
        client.health()
    assert "idempotency-key" not in scripted.received[0].headers


async def test_the_async_client_retries_with_the_same_key(scripted: ScriptedServer) -> None:
    scripted.script(
        Reply(502, "<html>bad gateway</html>"),
        Reply(429, problem(429, "RATE_LIMITED"), {"Retry-After": "3"}),
        Reply(201, KEY_BODY),
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with AsyncClient(scripted.url, "kp_mgmt_test", sleep=sleep, max_retries=2) as client:
        created = await client.keys.create("retried")
    assert created.data.id == KEY_BODY["data"]["id"]  # type: ignore[index]
    assert len({r.headers["idempotency-key"] for r in scripted.received}) == 1
    assert waits[1] == 3.0  # Retry-After is honoured exactly, without jitter


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(max_retries=10, base_delay=0.5, max_delay=4.0)
    upper = [policy.backoff(attempt, lambda low, high: high) for attempt in range(6)]
    assert upper == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(policy.backoff(n, lambda low, high: low) == 0.0 for n in range(6))


def test_retries_stop_at_max_retries_and_raise_the_last_error(scripted: ScriptedServer) -> None:
    scripted.script(*[Reply(500, problem(500, "INTERNAL_ERROR"))] * 3)
    waits: list[float] = []
    with sync_client(scripted, waits, max_retries=2) as client, pytest.raises(ServerError) as err:
        client.keys.list()
    assert err.value.status == 500 and err.value.code == "INTERNAL_ERROR"
    assert len(scripted.received) == 3 and len(waits) == 2


def test_a_too_long_retry_after_is_raised_not_waited(scripted: ScriptedServer) -> None:
    scripted.script(Reply(429, problem(429, "RATE_LIMITED", "slow down"), {"Retry-After": "120"}))
    waits: list[float] = []
    with sync_client(scripted, waits) as client, pytest.raises(RateLimitedError) as err:
        client.keys.list()
    assert err.value.retry_after == 120.0 and waits == [] and len(scripted.received) == 1


def test_client_errors_are_not_retried(scripted: ScriptedServer) -> None:
    scripted.script(Reply(409, problem(409, "PLAN_IN_USE", "keys use it")))
    waits: list[float] = []
    with sync_client(scripted, waits) as client, pytest.raises(ConflictError) as err:
        client.plans.delete("pro")
    assert (err.value.code, err.value.detail) == ("PLAN_IN_USE", "keys use it")
    assert len(scripted.received) == 1 and waits == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ValidationError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, APIError),
        (422, ValidationError),
        (429, RateLimitedError),
        (503, ServerError),
    ],
)
def test_statuses_map_to_the_error_tree(
    scripted: ScriptedServer, status: int, error: type[APIError]
) -> None:
    scripted.script(Reply(status, problem(status, f"CODE_{status}", "why")))
    with sync_client(scripted, [], max_retries=0) as client, pytest.raises(error) as caught:
        client.keys.get("key_x")
    assert type(caught.value) is error and isinstance(caught.value, KeyplaneError)
    assert (caught.value.status, caught.value.code, caught.value.detail) == (
        status,
        f"CODE_{status}",
        "why",
    )


def test_a_non_json_error_still_maps(scripted: ScriptedServer) -> None:
    scripted.script(Reply(404, "<html>not here</html>"))
    with sync_client(scripted, []) as client, pytest.raises(NotFoundError) as caught:
        client.keys.get("key_x")
    assert caught.value.code == "HTTP_404" and "not here" in str(caught.value.body)


def test_an_unreadable_success_is_an_api_error_not_a_pydantic_trace(
    scripted: ScriptedServer,
) -> None:
    scripted.script(Reply(200, {"unexpected": True}))
    with sync_client(scripted, []) as client, pytest.raises(APIError) as caught:
        client.keys.get("key_x")
    assert caught.value.code == "UNEXPECTED_RESPONSE"


def test_a_server_that_is_down_is_a_connection_error_after_retries() -> None:
    waits: list[float] = []
    client = Client(f"http://127.0.0.1:{free_port()}", sleep=waits.append, max_retries=2)
    with client, pytest.raises(ConnectionError) as caught:
        client.health()
    assert len(waits) == 2 and "cannot reach" in str(caught.value)
    assert not isinstance(caught.value, TimeoutError)


def test_a_slow_server_is_a_timeout_error(scripted: ScriptedServer) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections, never answers
    try:
        port = listener.getsockname()[1]
        client = Client(f"http://127.0.0.1:{port}", timeout=0.2, max_retries=0)
        with client, pytest.raises(TimeoutError):
            client.health()
    finally:
        listener.close()


def test_retry_after_reads_seconds_and_http_dates() -> None:
    import httpx

    def response(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after(response("7")) == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after(response(later)) or 0) <= 30
    assert retry_after(response("soon")) is None
    assert retry_after(httpx.Response(429)) is None


def test_next_delay_gives_up_on_non_retryable_failures() -> None:
    config = Config.resolve("http://x", None, 1.0, 2, None, None)
    assert next_delay(config, 0, NotFoundError(404, "X", "y")) is None
    assert next_delay(config, 2, ServerError(503, "X", "y")) is None
    assert next_delay(config, 0, ServerError(503, "X", "y")) is not None


def test_configuration_comes_from_arguments_then_environment(
    monkeypatch: pytest.MonkeyPatch, scripted: ScriptedServer
) -> None:
    monkeypatch.setenv("KEYPLANE_URL", scripted.url + "/")
    monkeypatch.setenv("KEYPLANE_MANAGEMENT_KEY", "kp_mgmt_from_env")
    scripted.script(Reply(200, {"status": "ok"}), Reply(200, {"status": "ok"}))
    with Client() as client:
        assert client.url == scripted.url
        client.health()
    with Client(scripted.url, "kp_mgmt_given") as client:
        client.health()
    auth = [r.headers["authorization"] for r in scripted.received]
    assert auth == ["Bearer kp_mgmt_from_env", "Bearer kp_mgmt_given"]
    # A key read from a file keeps working despite its newline; a mangled one is refused.
    monkeypatch.setenv("KEYPLANE_MANAGEMENT_KEY", "kp_mgmt_from_file\n")
    with Client(scripted.url) as client:
        assert client._config.management_key == "kp_mgmt_from_file"
    with pytest.raises(ValueError, match="header") as refused:
        Client(scripted.url, "kp_mgmt_bad\x00key")
    assert "kp_mgmt_bad" not in str(refused.value)
    with pytest.raises(ValueError, match="http"):
        Client("ftp://example.com")
    with pytest.raises(ValueError, match="max_retries"):
        Client(scripted.url, max_retries=-1)


def test_the_sdk_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, keyplane.client\n"
        "banned = ('keyplane.api', 'keyplane.services', 'keyplane.store', 'keyplane.domain',"
        " 'keyplane.settings', 'keyplane.errors', 'fastapi', 'sqlalchemy', 'starlette')\n"
        "print(sorted(m for m in sys.modules if m.startswith(banned)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_a_garbled_response_is_a_connection_error_not_an_httpx_one(
    scripted: ScriptedServer,
) -> None:
    scripted.script(Reply(200, "not gzip at all", {"Content-Encoding": "gzip"}))
    with sync_client(scripted, [], max_retries=0) as client, pytest.raises(ConnectionError):
        client.health()


def test_a_vault_without_a_master_key_is_not_retried(scripted: ScriptedServer) -> None:
    """503 VAULT_NOT_CONFIGURED lasts until the server restarts with a key: no use waiting."""
    scripted.script(Reply(503, problem(503, "VAULT_NOT_CONFIGURED")), Reply(503, problem(503, "X")))
    waits: list[float] = []
    with sync_client(scripted, waits) as client, pytest.raises(ServerError) as caught:
        client.vault.lease("openai")
    assert caught.value.code == "VAULT_NOT_CONFIGURED"
    assert len(scripted.received) == 1 and waits == []
