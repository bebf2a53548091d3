"""The lean data plane (``api/data_plane.py``) answers exactly as FastAPI's routes do.

The reference is the same application built with ``lean_data_plane`` off, sharing the first
one's runtime: every request goes through FastAPI's router there. Random verify requests,
well-formed or not, must get the same status, headers and body from both (the generated
request ids aside).
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Header, Request, Response
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.api.app import create_app
from keyplane.api.data_plane import DataPlane, lean_usage, lean_verify
from keyplane.api.deps import UsageDep, UsageWriter, Verifier, VerifierDep
from keyplane.api.routes import usage, verify
from keyplane.api.schemas import RequestId, UsageReportIn, VerifyRequest
from keyplane.domain.clock import ManualClock
from tests.conftest import ROOT_KEY, Api, Database


@pytest.fixture
def database(sqlite_database: Database) -> Database:
    # Parity is about the HTTP layer, which is the same on both backends.
    return sqlite_database


def client(app: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://keyplane.test", headers=headers)


@pytest.fixture
def reference(api: Api, database: Database, clock: ManualClock) -> Any:
    """The same application, routed by FastAPI alone, on the same runtime."""
    app = create_app(database.settings(lean_data_plane=False), clock=clock)
    app.state.runtime = api.app.state.runtime  # type: ignore[attr-defined]
    return app


def test_the_verify_route_has_the_shape_the_lean_path_calls() -> None:
    # A parameter added to the route turns the lean path off: this says so, loudly.
    route = next(r for r in verify.router.routes if getattr(r, "path", "") == "/v1/verify")
    lean = lean_verify(route)  # type: ignore[arg-type]
    assert lean is not None
    assert lean.scope == "verify"


async def _with_request(
    body: VerifyRequest, principal: Verifier, verifier: VerifierDep, request: Request
) -> None: ...


async def _with_a_header(
    body: VerifyRequest,
    principal: Verifier,
    verifier: VerifierDep,
    x_thing: Annotated[str | None, Header()] = None,
) -> None: ...


def test_an_endpoint_taking_anything_more_is_left_to_fastapi() -> None:
    # The lean path does the endpoint's work itself: an endpoint that reads the request, or
    # anything else, could do more with it.
    assert lean_verify(APIRoute("/v1/verify", _with_request, methods=["POST"])) is None
    assert lean_verify(APIRoute("/v1/verify", _with_a_header, methods=["POST"])) is None


FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "scopes": st.one_of(
        st.lists(st.sampled_from(["read:a", "read:*", "write:b", "", "x" * 300]), max_size=3),
        st.just("read:a"),
    ),
    "model": st.one_of(st.sampled_from(["gpt-4o", "claude-3-opus", "llama", ""]), st.integers()),
    "ip": st.sampled_from(["203.0.113.5", "198.51.100.1", "not an ip", "::1"]),
    "origin": st.sampled_from(["https://app.example.com", "https://evil.test", ""]),
    "user_agent": st.sampled_from(["MyApp/1.2", "curl/8", "x" * 3000]),
    "cost": st.one_of(
        st.sampled_from([0, 0.5, "0.000001", "1e400", -1, "12.3456789", True, None]),
        st.integers(-10, 10**20),
    ),
    "tokens": st.one_of(
        st.fixed_dictionaries({"input": st.integers(-1, 10**10), "output": st.integers(0, 9)}),
        st.just({"input": "5"}),
        st.just([]),
    ),
    "request_id": st.sampled_from(["req-1", "", "x" * 200, "bad id\n"]),
    "acquire_concurrency": st.sampled_from([True, False, "true", 1]),
    "unknown": st.just(1),
}


KEY_TEXT = "@key@"
KEY_MARK = json.dumps(KEY_TEXT).encode()


@st.composite
def verify_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A verify body (as bytes) and its headers: mostly JSON objects, sometimes not."""
    headers = {"Content-Type": "application/json"}
    shape = draw(st.sampled_from(["object"] * 8 + ["garbage", "empty", "array", "other-type"]))
    if shape == "garbage":
        return draw(st.sampled_from([b"{", b"not json", b"\xff\xfe", b'{"key": }'])), headers
    if shape == "empty":
        return b"", headers
    if shape == "array":
        return b'[{"key": "kp_live_x"}]', headers
    body: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        # KEY_MARK is replaced by one of the test's keys, once they exist.
        body["key"] = draw(st.one_of(st.just(KEY_TEXT), st.text(max_size=60), st.integers()))
    names = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=4, unique=True))
    for name in names:
        body[name] = draw(FIELD_VALUES[name])
    if shape == "other-type":
        headers = {"Content-Type": draw(st.sampled_from(["text/plain", "application/json; x=1"]))}
    return json.dumps(body).encode(), headers


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    if headers.get("x-keyplane-request-id", "").startswith("req_"):
        headers["x-keyplane-request-id"] = "<generated>"
    try:
        body = response.json()
    except ValueError:
        return response.status_code, headers, response.content
    if isinstance(body, dict) and str(body.get("request_id", "")).startswith("req_"):
        body["request_id"] = "<generated>"
    return response.status_code, headers, body


#: The keys of each ``api`` (created once: hypothesis runs every example on the same fixtures).
_KEYS: dict[int, list[str]] = {}


async def keys_of(api: Api) -> list[str]:
    if id(api) not in _KEYS:
        plain, _ = await api.create_key(scopes=["read:*"])
        ruled, _ = await api.create_key(
            policy={
                "models": {"allow": ["gpt-4*"]},
                "network": {"ip_allow": ["203.0.113.0/24"], "origins": ["https://*.example.com"]},
            }
        )
        scoped, _ = await api.create_key(scopes=["write:b"], metadata={"m": [1, "x"]})
        _KEYS[id(api)] = [plain, ruled, scoped, plain[:-1] + "x", "kp_live_short"]
    return _KEYS[id(api)]


KEY_CHOICES = st.sampled_from(range(5))


@given(request=verify_requests(), key_choice=KEY_CHOICES)
@settings(
    max_examples=80,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_random_verify_requests_get_the_same_answer_from_both(
    api: Api, reference: Any, request: tuple[bytes, dict[str, str]], key_choice: int
) -> None:
    key = (await keys_of(api))[key_choice]
    content, headers = request
    content = content.replace(KEY_MARK, json.dumps(key).encode())
    lean = await api.client.post("/v1/verify", content=content, headers=headers)
    async with client(reference, {"Authorization": f"Bearer {ROOT_KEY}"}) as http:
        routed = await http.post("/v1/verify", content=content, headers=headers)
    assert comparable(lean) == comparable(routed)


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc", "Bearer kp_x"])
async def test_unauthenticated_verify_is_refused_alike(
    api: Api, reference: Any, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answers = []
    for app in (api.app, reference):
        async with client(app, headers) as http:
            answers.append(await http.post("/v1/verify", json={"key": "kp_live_x"}))
    assert answers[0].status_code == 401
    assert comparable(answers[0]) == comparable(answers[1])


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/verify", {"key": "kp_live_x"}), ("/v1/usage", {"key": "kp_live_x", "cost": 1})],
    ids=["verify", "usage"],
)
async def test_a_key_without_the_routes_scope_is_refused_alike(
    api: Api, reference: Any, path: str, body: dict[str, Any]
) -> None:
    reader = api.as_key(await api.management_key("keys:read"))
    answers = []
    for app in (api.app, reference):
        async with client(app, reader) as http:
            answers.append(await http.post(path, json=body))
    assert answers[0].status_code == 403
    assert comparable(answers[0]) == comparable(answers[1])


async def test_healthz_is_the_same_document(api: Api, reference: Any) -> None:
    async with client(reference) as http:
        routed = await http.get("/healthz")
    lean = await api.client.get("/healthz")
    assert lean.status_code == 200
    assert lean.content == routed.content
    assert comparable(lean) == comparable(routed)


AUTH_PATHS = st.sampled_from(["/v1/auth", "/v1/auth/", "/v1/auth/v1/chat?x=1", "/v1/authx"])
AUTH_METHODS = st.sampled_from(["GET", "POST", "HEAD", "DELETE", "TRACE"])


@given(
    path=AUTH_PATHS,
    method=AUTH_METHODS,
    gateway=st.sampled_from([None, ROOT_KEY, "nope"]),
    key_choice=st.sampled_from([None, *range(5)]),
    forwarded=st.sampled_from([{}, {"X-Forwarded-For": "203.0.113.5"}, {"X-Original-URI": "/x"}]),
)
@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_forward_auth_gets_the_same_answer_from_both(
    api: Api,
    reference: Any,
    path: str,
    method: str,
    gateway: str | None,
    key_choice: int | None,
    forwarded: dict[str, str],
) -> None:
    headers = dict(forwarded)
    if gateway is not None:
        headers["X-Keyplane-Gateway-Key"] = gateway
    if key_choice is not None:
        headers["Authorization"] = f"Bearer {(await keys_of(api))[key_choice]}"
    answers = []
    for app in (api.app, reference):
        async with client(app) as http:
            answers.append(await http.request(method, path, headers=headers))
    assert comparable(answers[0]) == comparable(answers[1])


def test_the_usage_route_has_the_shape_the_lean_path_calls() -> None:
    # A parameter added to the route turns the lean path off for it: this says so, loudly.
    route = next(r for r in usage.router.routes if getattr(r, "path", "") == "/v1/usage")
    lean = lean_usage(route)  # type: ignore[arg-type]
    assert lean is not None
    assert (lean.scope, lean.status) == ("usage:write", 201)


async def _usage_with_a_header(
    body: UsageReportIn,
    principal: UsageWriter,
    usage: UsageDep,
    response: Response,
    idempotency_key: Annotated[RequestId | None, Header(alias="x-other")] = None,
) -> None: ...


def test_the_lean_usage_path_leaves_a_changed_route_to_fastapi() -> None:
    route = APIRoute("/v1/usage", _usage_with_a_header, methods=["POST"])
    assert lean_usage(route) is None


RID = "@rid@"
USAGE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "request_id": st.one_of(st.just(RID), st.just(""), st.just("has space"), st.integers()),
    "cost": st.one_of(
        st.sampled_from([0, 0.5, "0.25", -1, 1e300, "1e3", None, 12.3456789]), st.integers()
    ),
    "input_tokens": st.one_of(st.integers(-5, 10**19), st.just("7")),
    "output_tokens": st.integers(0, 1000),
    "model": st.one_of(st.none(), st.sampled_from(["gpt-4", "m" * 200, ""])),
    "latency_ms": st.one_of(st.none(), st.integers(-1, 10**7)),
    "status": st.one_of(st.none(), st.sampled_from([200, 429, 99, 600])),
    "feature": st.one_of(st.none(), st.sampled_from(["chat", "bad feature", "f" * 80])),
    "unknown": st.just(1),
}


@st.composite
def usage_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A usage report (as bytes) and its headers: mostly objects naming a key, some not."""
    headers = {"Content-Type": "application/json"}
    shape = draw(st.sampled_from(["object"] * 8 + ["garbage", "empty", "other-type"]))
    if shape == "garbage":
        return draw(st.sampled_from([b"{", b"not json", b'{"key_id": }'])), headers
    if shape == "empty":
        return b"", headers
    body: dict[str, Any] = {"request_id": RID}
    who = draw(st.sampled_from(["key_id", "key", "both", "neither", "bad-id"]))
    if who in ("key_id", "both"):
        body["key_id"] = "@key_id@"
    if who in ("key", "both"):
        body["key"] = KEY_TEXT
    if who == "bad-id":
        body["key_id"] = "key_" + "0" * 26
    names = draw(st.lists(st.sampled_from(sorted(USAGE_FIELDS)), max_size=4, unique=True))
    for name in names:
        body[name] = draw(USAGE_FIELDS[name])
    idempotency = draw(st.sampled_from([None, RID, "has space", "x" * 300]))
    if idempotency is not None:
        headers["Idempotency-Key"] = idempotency
    if shape == "other-type":
        headers["Content-Type"] = "text/plain"
    return json.dumps(body).encode(), headers


def _fresh(content: bytes, headers: dict[str, str], key: str, key_id: str) -> tuple[bytes, dict]:
    rid = secrets.token_hex(8)
    content = content.replace(KEY_MARK, json.dumps(key).encode())
    content = content.replace(b"@key_id@", key_id.encode()).replace(RID.encode(), rid.encode())
    return content, {name: value.replace(RID, rid) for name, value in headers.items()}


def _masked(answer: tuple[int, dict[str, str], Any]) -> tuple[int, dict[str, str], Any]:
    status, headers, body = answer
    if isinstance(body, dict) and str(body.get("id", "")).startswith("use_"):
        body = {**body, "id": "<entry>"}
    return status, headers, body


@given(request=usage_requests())
@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_random_usage_reports_get_the_same_answer_from_both(
    api: Api, reference: Any, request: tuple[bytes, dict[str, str]]
) -> None:
    key = (await keys_of(api))[0]
    key_id = (await api.client.post("/v1/verify", json={"key": key})).json()["key_id"]
    content, headers = request
    first, first_headers = _fresh(content, headers, key, key_id)
    other, other_headers = _fresh(content, headers, key, key_id)
    async with client(reference, {"Authorization": f"Bearer {ROOT_KEY}"}) as routed:
        # A first report through each path (different request ids: both new) ...
        lean_new = await api.client.post("/v1/usage", content=first, headers=first_headers)
        routed_new = await routed.post("/v1/usage", content=other, headers=other_headers)
        assert _masked(comparable(lean_new)) == _masked(comparable(routed_new))
        # ... and a repeat of one report through each: the same duplicate, byte for byte.
        routed_again = await routed.post("/v1/usage", content=first, headers=first_headers)
        lean_again = await api.client.post("/v1/usage", content=first, headers=first_headers)
    assert comparable(lean_again) == comparable(routed_again)


async def test_a_reused_idempotency_key_is_refused_alike(api: Api, reference: Any) -> None:
    key = (await keys_of(api))[0]
    headers = {"Idempotency-Key": "same-" + secrets.token_hex(4)}
    first = await api.client.post("/v1/usage", json={"key": key, "cost": 1}, headers=headers)
    assert first.status_code == 201
    answers = [await api.client.post("/v1/usage", json={"key": key, "cost": 2}, headers=headers)]
    async with client(reference, {"Authorization": f"Bearer {ROOT_KEY}"}) as routed:
        answers.append(
            await routed.post("/v1/usage", json={"key": key, "cost": 2}, headers=headers)
        )
    assert answers[0].status_code == 409
    assert comparable(answers[0]) == comparable(answers[1])


def _fastapi_bypassed(api: Api) -> list[str]:
    """The paths the middleware stack and FastAPI are asked for, from now on."""
    plane = api.app.data_plane  # type: ignore[attr-defined]
    assert isinstance(plane, DataPlane)
    routed: list[str] = []

    async def fastapi(scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])

    plane.fallback = fastapi
    return routed


async def test_a_valid_report_is_answered_without_fastapi(api: Api) -> None:
    key = (await keys_of(api))[0]  # built first: creating keys goes through FastAPI
    routed = _fastapi_bypassed(api)
    answer = await api.client.post(
        "/v1/usage", json={"key": key, "cost": 0.5, "request_id": secrets.token_hex(6)}
    )
    assert answer.status_code == 201 and answer.json()["duplicate"] is False
    assert routed == []


async def test_verify_healthz_and_forward_auth_are_answered_ahead_of_the_stack(api: Api) -> None:
    key = (await keys_of(api))[0]
    routed = _fastapi_bypassed(api)
    verified = await api.client.post("/v1/verify", json={"key": key})
    health = await api.client.get("/healthz")
    forwarded = await api.client.get("/v1/auth/any/path", headers={"X-Api-Key": key})
    assert [verified.status_code, health.status_code, routed] == [200, 200, []]
    assert forwarded.status_code in (200, 401)  # whatever it answers, it answered it
    for answer in (verified, health, forwarded):
        # What the stack would add: the request id and the security headers.
        assert len(answer.headers["x-request-id"]) == 24
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["keyplane-version"]


async def test_a_request_without_a_body_is_answered_without_reading_one(api: Api) -> None:
    received: list[Any] = []

    async def receive() -> Any:
        received.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def answer(headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/healthz",
            "raw_path": b"/healthz",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1),
        }
        await api.app(scope, receive, send)
        return int(sent[0]["status"])

    # Nothing declares a body: nothing to wait for.
    assert await answer([(b"host", b"x")]) == 200
    assert await answer([(b"content-length", b"0")]) == 200
    assert received == []
    # A body declared either way is read (its size checked) before the answer.
    assert await answer([(b"content-length", b"0"), (b"transfer-encoding", b"chunked")]) == 200
    assert received == [1]


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/verify"), ("POST", "/v1/usage"), ("GET", "/healthz")]
)
async def test_requests_over_a_limit_are_refused_by_the_stack_alike(
    api: Api, reference: Any, method: str, path: str
) -> None:
    big = b'{"key": "' + b"k" * 70_000 + b'"}'

    def chunked() -> Any:
        async def chunks() -> Any:
            for _ in range(3):
                yield big[:30_000]

        return chunks()

    async with client(reference, dict(api.client.headers)) as routed:
        for shape in ("many headers", "declared", "chunked"):
            answers = []
            for plane in (api.client, routed):
                if shape == "many headers":
                    headers = {f"x-a{i}": "1" for i in range(150)}
                    answer = await plane.request(method, path, headers=headers)
                elif shape == "declared":
                    answer = await plane.request(method, path, content=big)
                else:
                    answer = await plane.request(method, path, content=chunked())
                answers.append(answer)
            lean, fastapi = answers
            assert lean.status_code == (431 if shape == "many headers" else 413), shape
            assert comparable(lean) == comparable(fastapi), shape
            assert lean.headers["x-request-id"]


async def test_an_unexpected_error_gets_the_stacks_500_document_and_is_observed(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = (await keys_of(api))[0]
    verifier = api.app.state.runtime.services.verifier  # type: ignore[attr-defined]

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(verifier, "verify", broken)
    caplog.set_level(logging.INFO, logger="keyplane.access")
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://keyplane.test", headers=dict(api.client.headers)
    ) as raw:
        answer = await raw.post("/v1/verify", json={"key": key})
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "INTERNAL_ERROR"
    assert "a bug" not in answer.text
    assert answer.headers["x-content-type-options"] == "nosniff"
    logged = [r for r in caplog.records if r.name == "keyplane.access"]
    assert [r.checked_fields["status"] for r in logged] == [500]  # type: ignore[attr-defined]
    assert logged[0].checked_fields["request_id"] == answer.headers["x-request-id"]  # type: ignore[attr-defined]
