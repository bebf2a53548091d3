"""Hostile input through the API, on SQLite and PostgreSQL.

Malformed JSON, wrong types, unknown fields, oversized bodies, unicode garbage in every text
field, unknown and malformed ids, garbage query parameters and credentials: every one is a 4xx
``application/problem+json`` with a stable ``code`` and no traceback, never a 5xx, and none of
them changes what is already stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
from starlette.types import ASGIApp, Message

from tests.conftest import ROOT_KEY, Api

PROBLEM_FIELDS = {"type", "title", "status", "code", "detail"}
CODE = re.compile(r"[A-Z][A-Z0-9_]*")
NOW = "2026-03-01T12:00:00Z"  # the `clock` fixture's instant

# Clean but exotic text: emoji (with ZWJ sequences and a variation selector), right-to-left
# script, bidi controls, zero-width characters, combining marks, astral-plane letters. These are
# format characters (category Cf), not control characters, so they are stored as given.
EXOTIC = {
    "emoji": "\U0001f511\U0001f680 keys \U0001f469\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f",
    "rtl": "\u0645\u0641\u062a\u0627\u062d \u05de\u05e4\u05ea\u05d7",
    "bidi": "\u202eevil\u202c and \u2067isolate\u2069",
    "zero_width": "a\u200bb\u200cc\u200dd\u2060e\ufeff",
    "combining": "e\u0301\u0308 Z\u0351\u0363\u036b",
    "astral": "\U0001d542\U0001d556\U0001d56a \U00020000\U0002a6d6",
}
# Text every field refuses: control characters (C0, DEL, C1) including NUL.
CONTROL = ["nul\x00byte", "escape\x1b[31m", "bell\x07", "delete\x7f", "c1\x85next", "\x00"]
# Lone surrogates only exist in JSON escapes; they cannot be encoded as UTF-8 at all.
SURROGATES = ["\ud800", "\udfff", "x\udc00y", "\udc00\ud800"]
TEN_THOUSAND = "k" * 10_000


# -- helpers ----------------------------------------------------------------------------------


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with this status and a stable code, and no leaked internals."""
    request = response.request
    try:
        sent = request.content[:200]
    except httpx.RequestNotRead:  # a streamed body
        sent = b"<stream>"
    context = (request.method, str(request.url)[:200], sent, response.text[:500])
    assert response.status_code == status, context
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert CODE.fullmatch(body["code"]), body["code"]
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_names_field(problem: dict[str, Any], loc: str) -> None:
    """A validation problem that points at ``loc`` (like ``body.tags.0``)."""
    assert f"{loc}:" in problem["detail"], problem
    assert loc in [error["loc"] for error in problem["errors"]], problem


async def send_json(api: Api, method: str, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    """Send ``body`` serialised by ``json.dumps``: ASCII-escaped, so lone surrogates travel as
    ``\\ud800`` escapes and NaN as ``NaN``, exactly as a hostile client would write them."""
    return await api.client.request(
        method,
        path,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **kwargs.pop("headers", {})},
        **kwargs,
    )


@dataclass
class Stored:
    """Objects created before the hostile requests, to prove they survive them."""

    key: str
    key_id: str
    key_hash: str
    management_key_id: str
    project_id: str

    async def records(self, api: Api) -> list[Any]:
        urls = [
            f"/v1/keys/{self.key_id}",
            f"/v1/management-keys/{self.management_key_id}",
            f"/v1/projects/{self.project_id}",
        ]
        responses = [await api.client.get(url) for url in urls]
        assert all(response.status_code == 200 for response in responses)
        return [response.json() for response in responses]


async def store_some_objects(api: Api) -> Stored:
    project = await api.client.post("/v1/projects", json={"name": "acme", "key_prefix": "acme"})
    assert project.status_code == 201, project.text
    project_id = project.json()["data"]["id"]
    key, data = await api.create_key(
        name="production " + EXOTIC["emoji"],
        project_id=project_id,
        label="prod",
        description="line one\nline two",
        owner="cust_42",
        tags=["gold", "eu"],
        metadata={"billing": {"tier": "enterprise", "seats": 12}},
        scopes=["read:*"],
        expires_at="2027-01-01T00:00:00Z",
    )
    created = await api.client.post(
        "/v1/management-keys", json={"name": "ci", "scopes": ["keys:read"]}
    )
    assert created.status_code == 201, created.text
    return Stored(key, data["id"], data["hash"], created.json()["data"]["id"], project_id)


async def snapshot(api: Api) -> dict[str, Any]:
    """Everything stored, as the API shows it (lists hold the full records)."""
    keys = await api.client.get("/v1/keys", params={"limit": 100})
    management_keys = await api.client.get("/v1/management-keys", params={"limit": 100})
    projects = await api.client.get("/v1/projects")
    for response in (keys, management_keys, projects):
        assert response.status_code == 200, response.text
    return {
        "keys": keys.json()["data"],
        "management_keys": management_keys.json()["data"],
        "projects": projects.json()["data"],
    }


@pytest.fixture
async def stored(api: Api) -> AsyncIterator[Stored]:
    """Stored objects that every test must leave exactly as they were, still verifying."""
    objects = await store_some_objects(api)
    before = await objects.records(api)
    yield objects
    assert await objects.records(api) == before, "a hostile request changed a stored object"
    assert (await api.verify(objects.key))["code"] == "VALID"


@pytest.fixture
async def untouched(api: Api, stored: Stored) -> AsyncIterator[Stored]:
    """For tests whose every request is refused: afterwards nothing at all has changed, no
    object was added or removed (the key, management key and project counts are the same)."""
    before = await snapshot(api)
    yield stored
    assert await snapshot(api) == before, "a refused request changed stored data"


def body_endpoints(s: Stored) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every operation that takes a JSON body: (method, path, a body it accepts). Key
    operations target the stored key, so a body that got through would change it."""
    return {
        "create key": ("POST", "/v1/keys", {"name": "new"}),
        "update key": ("PATCH", f"/v1/keys/{s.key_id}", {"label": "new"}),
        "revoke key": ("DELETE", f"/v1/keys/{s.key_id}", {"reason": "done"}),
        "rotate key": ("POST", f"/v1/keys/{s.key_id}/rotate", {"grace_period_seconds": 0}),
        "disable key": ("POST", f"/v1/keys/{s.key_id}/disable", {"reason": "paused"}),
        "verify": ("POST", "/v1/verify", {"key": s.key}),
        "create management key": (
            "POST",
            "/v1/management-keys",
            {"name": "n", "scopes": ["verify"]},
        ),
        "create project": ("POST", "/v1/projects", {"name": "new"}),
    }


# -- malformed JSON ---------------------------------------------------------------------------

MALFORMED_JSON = [
    b"{",
    b'{"name": "x"',
    b"{'name': 'x'}",
    b'{"name": x}',
    b'{"name": "x",}',
    b'{"name" "x"}',
    b'{"name": "x"} {"name": "y"}',
    b'{"name": "unterminated}',
    b"\xff\xfe\x00{",
    b"\x00",
]


async def test_malformed_json_is_refused_with_400_invalid_json(api: Api, untouched: Stored) -> None:
    for method, path, _ in body_endpoints(untouched).values():
        for raw in MALFORMED_JSON:
            response = await api.client.request(
                method, path, content=raw, headers={"content-type": "application/json"}
            )
            assert_problem(response, 400, "INVALID_JSON")


async def test_json_nested_deeper_than_the_parser_allows_is_a_400_not_a_crash(
    api: Api, untouched: Stored
) -> None:
    deep = '{"name": "x", "metadata": {"a": ' + "[" * 5_000 + "]" * 5_000 + "}}"
    response = await api.client.post(
        "/v1/keys", content=deep.encode(), headers={"content-type": "application/json"}
    )
    # FastAPI reports a parser failure other than a syntax error as a generic 400.
    assert_problem(response, 400)


# -- wrong types and unknown fields -----------------------------------------------------------

# (endpoint, body, the field the problem must name)
WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("create key", [], "body"),
    ("create key", "a key please", "body"),
    ("create key", {"name": 123}, "body.name"),
    ("create key", {"name": None}, "body.name"),
    ("create key", {"name": ["x"]}, "body.name"),
    ("create key", {"name": True}, "body.name"),
    ("create key", {"name": "x", "environment": 1}, "body.environment"),
    ("create key", {"name": "x", "environment": "prod"}, "body.environment"),
    ("create key", {"name": "x", "project_id": 7}, "body.project_id"),
    ("create key", {"name": "x", "project_id": "not a project"}, "body.project_id"),
    ("create key", {"name": "x", "label": 1.5}, "body.label"),
    ("create key", {"name": "x", "description": ["a"]}, "body.description"),
    ("create key", {"name": "x", "owner": {}}, "body.owner"),
    ("create key", {"name": "x", "tags": "gold"}, "body.tags"),
    ("create key", {"name": "x", "tags": [1]}, "body.tags.0"),
    ("create key", {"name": "x", "tags": ["ok", {"a": 1}]}, "body.tags.1"),
    ("create key", {"name": "x", "metadata": []}, "body.metadata"),
    ("create key", {"name": "x", "metadata": "tier=gold"}, "body.metadata"),
    ("create key", {"name": "x", "scopes": "read"}, "body.scopes"),
    ("create key", {"name": "x", "scopes": [True]}, "body.scopes.0"),
    ("create key", {"name": "x", "scopes": ["Not A Scope"]}, "body.scopes.0"),
    ("create key", {"name": "x", "expires_at": "next week"}, "body.expires_at"),
    ("create key", {"name": "x", "expires_at": []}, "body.expires_at"),
    ("update key", [], "body"),
    ("update key", {"name": 5}, "body.name"),
    ("update key", {"label": False}, "body.label"),
    ("update key", {"tags": {}}, "body.tags"),
    ("update key", {"metadata": 1}, "body.metadata"),
    ("update key", {"scopes": "read"}, "body.scopes"),
    ("update key", {"expires_at": "soon"}, "body.expires_at"),
    ("revoke key", {"reason": []}, "body.reason"),
    ("revoke key", {"reason": 1}, "body.reason"),
    ("rotate key", {"grace_period_seconds": "long"}, "body.grace_period_seconds"),
    ("rotate key", {"grace_period_seconds": 1.5}, "body.grace_period_seconds"),
    ("rotate key", {"grace_period_seconds": True}, "body.grace_period_seconds"),
    ("rotate key", {"grace_period_seconds": -1}, "body.grace_period_seconds"),
    ("rotate key", {"grace_period_seconds": 10**12}, "body.grace_period_seconds"),
    ("disable key", [], "body"),
    ("disable key", {"reason": 5}, "body.reason"),
    ("disable key", {"auto_enable_after": "soon"}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": 1.5}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": []}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": 0}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": "0m"}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": "366d"}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": "1w"}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": "1 h"}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": "9" * 60_000}, "body.auto_enable_after"),
    ("disable key", {"auto_enable_after": True}, "body.auto_enable_after"),
    ("verify", {"key": 123}, "body.key"),
    ("verify", {"key": None}, "body.key"),
    ("verify", {"key": ["kp_live_x"]}, "body.key"),
    ("verify", {}, "body.key"),
    ("verify", {"key": "x", "scopes": "read"}, "body.scopes"),
    ("create management key", {"name": 1, "scopes": ["verify"]}, "body.name"),
    ("create management key", {"name": "x", "scopes": "verify"}, "body.scopes"),
    ("create management key", {"name": "x", "scopes": []}, "body.scopes"),
    ("create management key", {"name": "x"}, "body.scopes"),
    (
        "create management key",
        {"name": "x", "scopes": ["verify"], "project_id": 5},
        "body.project_id",
    ),
    ("create project", {"name": []}, "body.name"),
    ("create project", {}, "body.name"),
    ("create project", {"name": "x", "key_prefix": 5}, "body.key_prefix"),
    ("create project", {"name": "x", "key_prefix": "Not-Lower"}, "body.key_prefix"),
]


async def test_wrong_types_are_refused_with_422_naming_the_field(
    api: Api, untouched: Stored
) -> None:
    endpoints = body_endpoints(untouched)
    assert {name for name, _, _ in WRONG_TYPES} == set(endpoints)
    for name, body, loc in WRONG_TYPES:
        method, path, _ = endpoints[name]
        response = await send_json(api, method, path, body)
        assert_names_field(assert_problem(response, 422, "VALIDATION_FAILED"), loc)


async def test_unknown_fields_are_refused_with_422_naming_the_field(
    api: Api, untouched: Stored
) -> None:
    for method, path, accepted in body_endpoints(untouched).values():
        for unknown in ("colour", "nmae", "is_admin", "id", "status", EXOTIC["emoji"]):
            body = {**accepted, unknown: "red"}
            problem = assert_problem(
                await send_json(api, method, path, body), 422, "VALIDATION_FAILED"
            )
            assert_names_field(problem, f"body.{unknown}")
            assert "not permitted" in problem["detail"]


async def test_problem_details_never_echo_the_offending_input(api: Api, untouched: Stored) -> None:
    secret = "kp_live_" + "s3cr3t" * 10
    response = await send_json(api, "POST", "/v1/keys", {"name": 1, "owner": {"x": secret}})
    assert_problem(response, 422)
    assert secret not in response.text


# -- body size --------------------------------------------------------------------------------


def _oversized_json(api: Api) -> bytes:
    limit = api.database.settings().max_body_bytes
    body = json.dumps({"name": "x", "description": "d" * limit}).encode()
    assert len(body) > limit
    return body


async def test_a_body_over_the_limit_is_refused_with_413_by_content_length(
    api: Api, untouched: Stored
) -> None:
    for method, path, _ in body_endpoints(untouched).values():
        body = _oversized_json(api)
        request = api.client.build_request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert int(request.headers["content-length"]) == len(body)
        assert_problem(await api.client.send(request), 413, "PAYLOAD_TOO_LARGE")


async def test_a_body_over_the_limit_is_refused_even_on_operations_without_a_body(
    api: Api, untouched: Stored
) -> None:
    for method, path in (("GET", "/v1/keys"), ("POST", f"/v1/keys/{untouched.key_id}/enable")):
        response = await api.client.request(method, path, content=_oversized_json(api))
        assert_problem(response, 413, "PAYLOAD_TOO_LARGE")


async def test_a_chunked_body_over_the_limit_is_refused_with_413(
    api: Api, untouched: Stored
) -> None:
    limit = api.database.settings().max_body_bytes
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "x", "description": "'
        for _ in range(limit // 1024 + 8):
            sent.append(1024)
            yield b"d" * 1024
        yield b'"}'

    request = api.client.build_request(
        "POST", "/v1/keys", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert_problem(await api.client.send(request), 413, "PAYLOAD_TOO_LARGE")
    # The server stopped reading once past the limit instead of buffering everything.
    assert sum(sent) < limit + 8 * 1024


async def _call_asgi(
    app: ASGIApp, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> httpx.Response:
    """One request straight through the ASGI interface, which can lie about Content-Length."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("keyplane.test", 80),
    }
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    request = httpx.Request(method, f"http://keyplane.test{path}")
    return httpx.Response(start["status"], headers=start["headers"], content=body, request=request)


async def test_a_body_larger_than_its_declared_content_length_is_refused_with_413(
    api: Api, untouched: Stored
) -> None:
    limit = api.database.settings().max_body_bytes
    chunks = [b'{"name": "x", "description": "'] + [b"d" * 4096] * (limit // 4096 + 2) + [b'"}']
    auth = {"authorization": f"Bearer {ROOT_KEY}", "content-type": "application/json"}
    for declared in ("16", "not-a-number"):
        response = await _call_asgi(
            cast(ASGIApp, api.app),
            "POST",
            "/v1/keys",
            {**auth, "content-length": declared},
            list(chunks),
        )
        assert_problem(response, 413, "PAYLOAD_TOO_LARGE")


async def test_a_body_exactly_at_the_limit_is_accepted(api: Api, stored: Stored) -> None:
    limit = api.database.settings().max_body_bytes
    head, tail = b'{"name": "padded"', b"}"
    body = head + b" " * (limit - len(head) - len(tail)) + tail
    assert len(body) == limit
    response = await api.client.post(
        "/v1/keys", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["name"] == "padded"


# -- unicode in every text field --------------------------------------------------------------

# Every free-text field, as (endpoint, a body putting `value` in it, the field's location).
TEXT_FIELDS: list[tuple[str, Callable[[str], Any], str]] = [
    ("create key", lambda v: {"name": v}, "body.name"),
    ("create key", lambda v: {"name": "x", "label": v}, "body.label"),
    ("create key", lambda v: {"name": "x", "description": v}, "body.description"),
    ("create key", lambda v: {"name": "x", "owner": v}, "body.owner"),
    ("create key", lambda v: {"name": "x", "tags": ["ok", v]}, "body.tags"),
    ("create key", lambda v: {"name": "x", "metadata": {"note": v}}, "body.metadata"),
    ("create key", lambda v: {"name": "x", "metadata": {v: 1}}, "body.metadata"),
    ("create key", lambda v: {"name": "x", "metadata": {"a": [{"b": v}]}}, "body.metadata"),
    ("create key", lambda v: {"name": "x", "scopes": [v]}, "body.scopes.0"),
    ("create key", lambda v: {"name": "x", "project_id": v}, "body.project_id"),
    ("create key", lambda v: {"name": "x", "environment": v}, "body.environment"),
    ("update key", lambda v: {"name": v}, "body.name"),
    ("update key", lambda v: {"label": v}, "body.label"),
    ("update key", lambda v: {"description": v}, "body.description"),
    ("update key", lambda v: {"owner": v}, "body.owner"),
    ("update key", lambda v: {"tags": [v]}, "body.tags"),
    ("update key", lambda v: {"metadata": {"note": v}}, "body.metadata"),
    ("update key", lambda v: {"scopes": [v]}, "body.scopes.0"),
    ("revoke key", lambda v: {"reason": v}, "body.reason"),
    ("disable key", lambda v: {"reason": v}, "body.reason"),
    ("verify", lambda v: {"key": "kp_live_x", "scopes": [v]}, "body.scopes.0"),
    ("create management key", lambda v: {"name": v, "scopes": ["verify"]}, "body.name"),
    ("create management key", lambda v: {"name": "x", "scopes": [v]}, "body.scopes.0"),
    ("create project", lambda v: {"name": v}, "body.name"),
    ("create project", lambda v: {"name": "x", "key_prefix": v}, "body.key_prefix"),
]
# The presented key is deliberately not text-checked (garbage is a MALFORMED verdict), but it
# is still a JSON string of bounded length.
VERIFY_KEY_FIELD: tuple[str, Callable[[str], Any], str] = (
    "verify",
    lambda v: {"key": v},
    "body.key",
)
# Surrogates are refused by the JSON parser itself, so the error sits on the string's own
# location (``body.tags.1``), not the container's.
SURROGATE_LOCS = {
    "body.tags": "body.tags.",
    "body.metadata": "body.metadata",
}


async def test_control_characters_are_refused_with_422_in_every_text_field(
    api: Api, untouched: Stored
) -> None:
    endpoints = body_endpoints(untouched)
    for name, build, loc in TEXT_FIELDS:
        method, path, _ = endpoints[name]
        for value in CONTROL:
            response = await send_json(api, method, path, build(value))
            assert_names_field(assert_problem(response, 422, "VALIDATION_FAILED"), loc)


async def test_lone_surrogates_are_refused_with_422_in_every_text_field(
    api: Api, untouched: Stored
) -> None:
    endpoints = body_endpoints(untouched)
    for name, build, loc in [*TEXT_FIELDS, VERIFY_KEY_FIELD]:
        method, path, _ = endpoints[name]
        for value in SURROGATES:
            assert "\\ud" in json.dumps(build(value))  # an escape: the bytes are valid UTF-8
            response = await send_json(api, method, path, build(value))
            problem = assert_problem(response, 422, "VALIDATION_FAILED")
            prefix = SURROGATE_LOCS.get(loc, loc)
            assert any(error["loc"].startswith(prefix) for error in problem["errors"]), problem


async def test_ten_thousand_character_strings_are_refused_with_422_in_every_text_field(
    api: Api, untouched: Stored
) -> None:
    endpoints = body_endpoints(untouched)
    for name, build, loc in [*TEXT_FIELDS, VERIFY_KEY_FIELD]:
        method, path, _ = endpoints[name]
        response = await send_json(api, method, path, build(TEN_THOUSAND))
        problem = assert_problem(response, 422, "VALIDATION_FAILED")
        assert loc.split(".")[1] in problem["detail"], problem


async def test_exotic_but_clean_text_is_stored_and_returned_exactly(
    api: Api, stored: Stored
) -> None:
    for label, text in EXOTIC.items():
        fields = {
            "name": text,
            "label": text,
            "description": f"{text}\n\twith a tab\r\nand lines",
            "owner": text,
            "tags": [text, f"{label} tag"],
            "metadata": {text: text, "nested": {"list": [text, 1, None, True, 0.5]}},
        }
        key, created = await api.create_key(**fields)
        for field, value in fields.items():
            assert created[field] == value, (label, field)
        fetched = (await api.client.get(f"/v1/keys/{created['id']}")).json()["data"]
        assert fetched == created
        by_owner = await api.client.get("/v1/keys", params={"owner": text})
        assert [item["id"] for item in by_owner.json()["data"]] == [created["id"]]
        by_tag = await api.client.get("/v1/keys", params={"tag": text})
        assert [item["id"] for item in by_tag.json()["data"]] == [created["id"]]
        verdict = await api.verify(key)
        assert verdict["code"] == "VALID"
        assert verdict["name"] == text and verdict["metadata"] == fields["metadata"]

        patched = await send_json(api, "PATCH", f"/v1/keys/{created['id']}", {"label": text[::-1]})
        assert patched.status_code == 200, patched.text
        assert patched.json()["data"]["label"] == text[::-1]
        disabled = await send_json(
            api, "POST", f"/v1/keys/{created['id']}/disable", {"reason": text}
        )
        assert disabled.json()["data"]["disabled_reason"] == text
        revoked = await api.client.delete(f"/v1/keys/{created['id']}", params={"reason": text})
        assert revoked.json()["data"]["revoked_reason"] == text

        project = await send_json(api, "POST", "/v1/projects", {"name": text})
        assert project.status_code == 201, project.text
        assert project.json()["data"]["name"] == text
        management = await send_json(
            api, "POST", "/v1/management-keys", {"name": text, "scopes": ["verify"]}
        )
        assert management.status_code == 201, management.text
        assert management.json()["data"]["name"] == text
        got = await api.client.get(f"/v1/management-keys/{management.json()['data']['id']}")
        assert got.json()["data"]["name"] == text
        await api.client.delete(f"/v1/management-keys/{management.json()['data']['id']}")


# -- ids in paths -----------------------------------------------------------------------------

ID_PATHS = [
    ("GET", "/v1/keys/{}"),
    ("PATCH", "/v1/keys/{}"),
    ("DELETE", "/v1/keys/{}"),
    ("POST", "/v1/keys/{}/rotate"),
    ("POST", "/v1/keys/{}/disable"),
    ("POST", "/v1/keys/{}/enable"),
    ("GET", "/v1/management-keys/{}"),
    ("DELETE", "/v1/management-keys/{}"),
    ("GET", "/v1/projects/{}"),
]
# Already percent-encoded where needed: these go into the URL as they are.
GARBAGE_IDS = [
    "nope",
    "0",
    "-1",
    "null",
    "%00",
    "key_%00",
    "%20",
    "%25",
    "%2E%2E",
    "%F0%9F%94%91",
    "%ED%A0%80",
    "%FF%FE",
    "%27%20OR%201%3D1%20--",
    "a" * 5000,
    "KEY_" + "0" * 26,
    "key_" + "0" * 25,
    "key_" + "0" * 27,
    "key_" + "i" * 26,
    "mk_" + "0" * 26,
    "proj_" + "0" * 26,
    "key_" + "0" * 26,
    "0" * 64,
    "F" * 64,
]


async def test_unknown_and_malformed_ids_are_404_problems_on_every_path(
    api: Api, untouched: Stored
) -> None:
    ids = [
        *GARBAGE_IDS,
        untouched.key_id + "%00",
        untouched.key_id.upper(),
        untouched.key_hash.upper(),
        untouched.key_hash[:-1],
        untouched.management_key_id + "x",
        untouched.project_id[:-1],
    ]
    for method, template in ID_PATHS:
        for id_ in ids:
            url = template.format(id_)
            if method == "PATCH":
                response = await send_json(api, method, url, {})
            else:
                response = await api.client.request(method, url)
            problem = assert_problem(response, 404)
            assert problem["code"].endswith("NOT_FOUND"), (url, problem)


async def test_ids_of_one_kind_are_not_found_on_another_kinds_path(
    api: Api, untouched: Stored
) -> None:
    wrong = [
        f"/v1/keys/{untouched.management_key_id}",
        f"/v1/keys/{untouched.project_id}",
        f"/v1/management-keys/{untouched.key_id}",
        f"/v1/management-keys/{untouched.key_hash}",
        f"/v1/projects/{untouched.key_id}",
        f"/v1/projects/{untouched.management_key_id}",
    ]
    for url in wrong:
        problem = assert_problem(await api.client.get(url), 404)
        assert problem["code"].endswith("NOT_FOUND")


# -- query parameters -------------------------------------------------------------------------

KEY_LIST_GARBAGE = [
    ("limit=abc", "VALIDATION_FAILED"),
    ("limit=0", "VALIDATION_FAILED"),
    ("limit=101", "VALIDATION_FAILED"),
    ("limit=-1", "VALIDATION_FAILED"),
    ("limit=1e400", "VALIDATION_FAILED"),
    ("limit=99999999999999999999999", "VALIDATION_FAILED"),
    ("limit=%00", "VALIDATION_FAILED"),
    ("environment=prod", "VALIDATION_FAILED"),
    ("status=%00", "VALIDATION_FAILED"),
    ("owner=%00", "VALIDATION_FAILED"),
    ("owner=cust%00_42", "VALIDATION_FAILED"),
    ("owner=" + "o" * 201, "VALIDATION_FAILED"),
    ("tag=%00", "VALIDATION_FAILED"),
    ("tag=%1B%5B31m", "VALIDATION_FAILED"),
    ("name=%00", "VALIDATION_FAILED"),
    ("project=%00", "VALIDATION_FAILED"),
    ("cursor=%00", "VALIDATION_FAILED"),
    ("cursor=key_%00", "VALIDATION_FAILED"),
    ("cursor=" + "c" * 41, "VALIDATION_FAILED"),
    ("foo=bar", "UNKNOWN_PARAMETER"),
    ("%00=1", "UNKNOWN_PARAMETER"),
    ("Limit=10", "UNKNOWN_PARAMETER"),
    ("metadata.billing.tier=%00", "INVALID_FILTER"),
    ("metadata.billing.tier=a%7Fb", "INVALID_FILTER"),
    ("metadata.%00=a", "INVALID_FILTER"),
    ("metadata.=a", "INVALID_FILTER"),
    ("metadata.a..b=c", "INVALID_FILTER"),
    ("metadata.%F0%9F%94%91=a", "INVALID_FILTER"),
    ("metadata.a%20b=c", "INVALID_FILTER"),
    ("metadata." + ".".join("a" * 9) + "=v", "INVALID_FILTER"),
    ("metadata." + "k" * 65 + "=v", "INVALID_FILTER"),
    ("metadata.a=" + "v" * 201, "INVALID_FILTER"),
    ("&".join(f"metadata.k{i}=v" for i in range(11)), "INVALID_FILTER"),
]


async def test_garbage_and_nul_in_key_list_queries_and_metadata_filters_are_422(
    api: Api, untouched: Stored
) -> None:
    for query, code in KEY_LIST_GARBAGE:
        response = await api.client.get(f"/v1/keys?{query}")
        problem = assert_problem(response, 422, code)
        if code != "UNKNOWN_PARAMETER":  # that detail names the parameter as it was sent
            assert "\x00" not in problem["detail"], problem


async def test_garbage_in_management_key_list_queries_is_422(api: Api, untouched: Stored) -> None:
    for query, code in [
        ("cursor=%00", "VALIDATION_FAILED"),
        ("cursor=" + "c" * 41, "VALIDATION_FAILED"),
        ("limit=abc", "VALIDATION_FAILED"),
        ("limit=0", "VALIDATION_FAILED"),
        ("owner=x", "UNKNOWN_PARAMETER"),
    ]:
        response = await api.client.get(f"/v1/management-keys?{query}")
        assert_problem(response, 422, code)


async def test_undecodable_query_bytes_match_nothing_instead_of_failing(
    api: Api, untouched: Stored
) -> None:
    # Invalid UTF-8 and encoded surrogates decode to U+FFFD, which no stored value contains.
    for query in ("owner=%ED%A0%80", "tag=%FF%FE", "name=%C3", "metadata.billing.tier=%80"):
        response = await api.client.get(f"/v1/keys?{query}")
        assert response.status_code == 200, (query, response.text)
        assert response.json()["data"] == []
    # A cursor is the last id of the previous page; anything clean is a valid starting point.
    for query in ("cursor=%ED%A0%80", "cursor=zzz", "cursor=key_" + "z" * 26, "cursor=%FF"):
        for path in ("/v1/keys", "/v1/management-keys"):
            response = await api.client.get(f"{path}?{query}")
            assert response.status_code == 200, (path, query, response.text)


async def test_a_revoke_reason_with_control_characters_in_the_query_is_refused(
    api: Api, untouched: Stored
) -> None:
    for reason in ("%00", "bad%00reason", "%1B%5B2J", "r" * 501):
        response = await api.client.delete(f"/v1/keys/{untouched.key_id}?reason={reason}")
        assert_problem(response, 422)


# -- expiry -----------------------------------------------------------------------------------

BAD_EXPIRY = [
    ("2030-01-01T00:00:00", "VALIDATION_FAILED"),  # naive
    ("2030-01-01", "VALIDATION_FAILED"),  # a date, no time or zone
    ("2030-01-01T00:00:00+02:00", "VALIDATION_FAILED"),  # not UTC
    ("2030-01-01T00:00:00-05:00", "VALIDATION_FAILED"),
    ("2030-01-01T00:00:00+00:01", "VALIDATION_FAILED"),
    ("2030-02-30T00:00:00Z", "VALIDATION_FAILED"),
    ("2030-13-01T00:00:00Z", "VALIDATION_FAILED"),
    ("", "VALIDATION_FAILED"),
    ("\x00", "VALIDATION_FAILED"),
    ("2026-03-01T11:59:59Z", "INVALID_EXPIRY"),  # one second ago
    (NOW, "INVALID_EXPIRY"),  # expiring now is already expired
    ("2026-03-01T11:00:00+00:00", "INVALID_EXPIRY"),
    ("0001-01-01T00:00:00Z", "INVALID_EXPIRY"),
]


async def test_expires_at_must_be_utc_and_in_the_future(api: Api, untouched: Stored) -> None:
    for value, code in BAD_EXPIRY:
        create = await send_json(api, "POST", "/v1/keys", {"name": "x", "expires_at": value})
        assert_problem(create, 422, code)
        update = await send_json(
            api, "PATCH", f"/v1/keys/{untouched.key_id}", {"expires_at": value}
        )
        assert_problem(update, 422, code)


# -- metadata ---------------------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


BAD_METADATA: list[Any] = [
    {"blob": "m" * 9000},  # over 8 KiB
    {f"k{i}": "v" * 100 for i in range(100)},  # many small values, over 8 KiB together
    _nested(10),  # deeper than 8 levels
    {"a": [[[[[[[[[["too deep"]]]]]]]]]]},
    {"a": float("nan")},
    {"a": float("inf")},
    {"a": float("-inf")},
    {"a": [1, 2, float("nan")]},
    {"a": 2**53},
    {"a": -(2**60)},
    {"a": "\x00"},
    {"a\x00": 1},
    {"a\n": 1},
]


async def test_metadata_that_is_too_big_too_deep_or_not_finite_is_refused(
    api: Api, untouched: Stored
) -> None:
    for metadata in BAD_METADATA:
        create = await send_json(api, "POST", "/v1/keys", {"name": "x", "metadata": metadata})
        assert_names_field(assert_problem(create, 422, "VALIDATION_FAILED"), "body.metadata")
        update = await send_json(
            api, "PATCH", f"/v1/keys/{untouched.key_id}", {"metadata": metadata}
        )
        assert_names_field(assert_problem(update, 422, "VALIDATION_FAILED"), "body.metadata")
    raw = b'{"name": "x", "metadata": {"a": 1e400}}'  # parses as infinity
    response = await api.client.post(
        "/v1/keys", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "VALIDATION_FAILED")


async def test_metadata_at_the_limits_is_accepted(api: Api, stored: Stored) -> None:
    metadata = {"deep": _nested(7), "big": 2**53 - 1, "small": -(2**53) + 1, "f": -0.5}
    _, data = await api.create_key(metadata=metadata)
    assert data["metadata"] == metadata


# -- credentials ------------------------------------------------------------------------------

BAD_AUTHORIZATION: list[str | bytes | None] = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong",
    f"Basic {ROOT_KEY}",
    f"Token {ROOT_KEY}",
    f"Bearer {ROOT_KEY}x",
    f"Bearer {ROOT_KEY[:-1]}",
    f"Bearer{ROOT_KEY}",
    "Bearer " + "x" * 10_000,
    "Bearer \x00",
    f"Bearer {ROOT_KEY}\x00",
    b"Bearer \xff\xfe",
    "Bearer kp_mgmt_" + "0" * 40,
]


async def test_requests_without_a_valid_management_key_get_401_with_www_authenticate(
    api: Api, untouched: Stored
) -> None:
    calls = [
        ("GET", "/v1/keys", None),
        ("GET", f"/v1/keys/{untouched.key_id}", None),
        ("POST", "/v1/keys", {"name": "x"}),
        ("DELETE", f"/v1/keys/{untouched.key_id}", None),
        ("POST", "/v1/verify", {"key": untouched.key}),
        ("POST", "/v1/management-keys", {"name": "x", "scopes": ["verify"]}),
        ("GET", "/v1/projects", None),
    ]
    for header in BAD_AUTHORIZATION:
        for method, path, body in calls:
            request = api.client.build_request(method, path, json=body)
            raw = [(k, v) for k, v in request.headers.raw if k.lower() != b"authorization"]
            if header is not None:  # bytes go out as they are, without any encoding
                raw.append(
                    (b"authorization", header.encode() if isinstance(header, str) else header)
                )
            request.headers = httpx.Headers(raw)
            response = await api.client.send(request)
            assert_problem(response, 401, "UNAUTHENTICATED")
            assert response.headers["www-authenticate"] == "Bearer"
            assert ROOT_KEY not in response.text


async def test_an_api_key_or_revoked_management_key_is_not_a_management_key(
    api: Api, stored: Stored
) -> None:
    live, _ = await api.create_key(name="live")
    test, _ = await api.create_key(name="test", environment="test")
    created = await api.client.post(
        "/v1/management-keys", json={"name": "old", "scopes": ["keys:read", "verify"]}
    )
    revoked = created.json()["key"]
    response = await api.client.delete(f"/v1/management-keys/{created.json()['data']['id']}")
    assert response.status_code == 200, response.text
    for presented in (live, test, revoked, stored.key):
        assert presented.startswith(("kp_live_", "kp_test_", "kp_mgmt_", "acme_live_"))
        for method, path in (("GET", "/v1/keys"), ("POST", "/v1/verify")):
            request = api.client.build_request(
                method, path, json={"key": live}, headers=api.as_key(presented)
            )
            response = await api.client.send(request)
            assert_problem(response, 401, "UNAUTHENTICATED")
            assert response.headers["www-authenticate"] == "Bearer"
            assert presented not in response.text


# -- verify -----------------------------------------------------------------------------------


async def test_verify_answers_malformed_for_garbage_keys_within_the_length_limit(
    api: Api, untouched: Stored
) -> None:
    garbage = [
        "",
        " ",
        "x",
        "x" * 4096,
        "kp_live_" + "A" * 4088,
        "\x00",
        "kp_live_\x00" + "a" * 40,
        untouched.key + "\x00",
        untouched.key.upper(),
        untouched.key[:-1],
        " " + untouched.key,
        "kp_live_" + "\U0001f511" * 36,
        EXOTIC["rtl"],
        EXOTIC["bidi"] + untouched.key,
        "' OR 1=1 --",
        "kp_live_" + "a" * 36 + "%00",
        "../../etc/passwd",
    ]
    for key in garbage:
        response = await send_json(api, "POST", "/v1/verify", {"key": key})
        assert response.status_code == 200, (key[:50], response.text)
        assert response.headers["content-type"] == "application/json"
        verdict = response.json()
        assert verdict["valid"] is False
        assert verdict["code"] == "MALFORMED", key[:50]


async def test_verify_refuses_keys_that_are_too_long_or_not_strings(
    api: Api, untouched: Stored
) -> None:
    for body in (
        {"key": "x" * 4097},
        {"key": TEN_THOUSAND},
        {"key": 1},
        {"key": {"key": untouched.key}},
        {"key": "\ud800"},
        {"key": untouched.key, "scopes": ["\x00"]},
        {"key": untouched.key, "scopes": ["s"] * 101},
    ):
        response = await send_json(api, "POST", "/v1/verify", body)
        assert_problem(response, 422, "VALIDATION_FAILED")
        assert untouched.key not in response.text


# -- nothing lost -----------------------------------------------------------------------------


async def test_a_barrage_of_refused_requests_leaves_every_stored_object_as_it_was(
    api: Api, untouched: Stored
) -> None:
    key_before = (await api.client.get(f"/v1/keys/{untouched.key_id}")).json()
    counts_before = {name: len(items) for name, items in (await snapshot(api)).items()}
    key_url = f"/v1/keys/{untouched.key_id}"
    barrage: list[tuple[str, str, Any]] = [
        ("PATCH", key_url, {"name": "x\x00"}),
        ("PATCH", key_url, {"name": "\ud800"}),
        ("PATCH", key_url, {"metadata": {"a": float("nan")}}),
        ("PATCH", key_url, {"expires_at": "2020-01-01T00:00:00Z"}),
        ("PATCH", key_url, {"tags": ["ok"], "status": "revoked"}),
        ("PATCH", key_url, {"hash": "0" * 64}),
        ("PATCH", key_url, {"scopes": ["BAD SCOPE"], "name": "renamed"}),
        ("PATCH", key_url, {"description": "d" * 2001, "label": "renamed"}),
        ("POST", f"{key_url}/rotate", {"grace_period_seconds": -5}),
        ("POST", f"{key_url}/rotate", {"grace_period_seconds": 0, "key": "mine"}),
        ("POST", f"{key_url}/disable", {"reason": "\x1b[2J"}),
        ("POST", f"{key_url}/disable", {"auto_enable_after": 0}),
        ("DELETE", key_url, {"reason": "\x00"}),
        ("DELETE", key_url, {"reason": 5}),
        ("POST", "/v1/keys", {"name": "x", "project_id": untouched.project_id, "tags": ["\x00"]}),
        ("POST", "/v1/keys", {"name": "x", "metadata": {"a": float("inf")}}),
        ("POST", "/v1/keys", {"name": "x", "id": untouched.key_id}),
        ("POST", "/v1/management-keys", {"name": "\x00", "scopes": ["verify"]}),
        ("POST", "/v1/management-keys", {"name": "x", "scopes": ["verify"], "id": "mk_1"}),
        ("POST", "/v1/projects", {"name": "x", "key_prefix": "\ud800"}),
        ("POST", "/v1/projects", {"name": "x", "id": untouched.project_id}),
    ]
    for method, path, body in barrage:
        response = await send_json(api, method, path, body)
        assert_problem(response, 422)
    oversized = _oversized_json(api)
    for method, path in (("PATCH", key_url), ("POST", "/v1/keys"), ("DELETE", key_url)):
        response = await api.client.request(method, path, content=oversized)
        assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    for raw in MALFORMED_JSON:
        response = await api.client.request(
            "PATCH", key_url, content=raw, headers={"content-type": "application/json"}
        )
        assert_problem(response, 400, "INVALID_JSON")
    response = await api.client.delete(f"{key_url}?reason=%00")
    assert_problem(response, 422)

    assert (await api.client.get(f"/v1/keys/{untouched.key_id}")).json() == key_before
    by_hash = await api.client.get(f"/v1/keys/{untouched.key_hash}")
    assert by_hash.json() == key_before
    counts_after = {name: len(items) for name, items in (await snapshot(api)).items()}
    assert counts_after == counts_before
    # The fixtures then check every stored record field by field, and that the key verifies.
