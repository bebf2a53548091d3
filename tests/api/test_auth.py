"""``/v1/auth`` forward auth: every status and header, trusted proxies, hostile headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from pydantic import ValidationError

from keyplane.api.app import create_app
from keyplane.domain import keyformat
from keyplane.domain.clock import ManualClock
from keyplane.settings import Settings
from tests.conftest import ROOT_KEY, Api, Database

GATEWAY = {"X-Keyplane-Gateway-Key": ROOT_KEY}


def as_gateway(key: str | None = None, **headers: str) -> dict[str, str]:
    """Headers of a forward-auth request: the gateway's key, the client's, extra context."""
    result = dict(GATEWAY)
    # The api fixture's client sends the root key as Authorization; always replace it.
    result["Authorization"] = f"Bearer {key}" if key is not None else ""
    result.update(headers)
    return result


async def auth(api: Api, key: str | None, path: str = "/v1/auth", **headers: str) -> httpx.Response:
    return await api.client.get(path, headers=as_gateway(key, **headers))


def assert_refused(response: httpx.Response, status: int, code: str, key: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert response.headers["X-Keyplane-Code"] == code
    if key:
        assert key not in response.text
        assert all(key not in value for value in response.headers.values())


async def test_a_valid_key_is_allowed_with_who_it_is(api: Api) -> None:
    await api.client.post("/v1/plans", json={"name": "pro", "policy": {}})
    key, data = await api.create_key(owner="cust_1", plan="pro")
    response = await auth(api, key)
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert response.headers["X-Keyplane-Key-Id"] == data["id"]
    assert response.headers["X-Keyplane-Owner"] == "cust_1"
    assert response.headers["X-Keyplane-Plan"] == "pro"
    assert response.headers["X-Keyplane-Request-Id"].startswith("req_")
    assert response.headers["X-Keyplane-Code"] == "VALID"
    assert all(key not in value for value in response.headers.values())


async def test_any_method_and_sub_path_is_the_same_question(api: Api) -> None:
    key, data = await api.create_key()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        for path in ("/v1/auth", "/v1/auth/v1/chat/completions", "/v1/auth/a/b?c=d"):
            response = await api.client.request(method, path, headers=as_gateway(key))
            assert response.status_code == 200, (method, path, response.text)
            assert response.headers["X-Keyplane-Key-Id"] == data["id"]
    refused = await api.client.post("/v1/auth/x", headers=as_gateway("kp_live_nope"))
    assert refused.status_code == 401


async def test_missing_key_is_401_with_a_bearer_challenge(api: Api) -> None:
    response = await auth(api, None)
    assert_refused(response, 401, "MISSING_KEY", None)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    basic = await api.client.get(
        "/v1/auth", headers={**GATEWAY, "Authorization": "Basic dXNlcjpwYXNz"}
    )
    assert_refused(basic, 401, "MISSING_KEY", None)


async def test_unusable_keys_are_401(api: Api) -> None:
    key, data = await api.create_key()
    other, _ = await api.create_key()
    unknown = keyformat.generate(keyformat.KeyKind.LIVE).text
    assert_refused(await auth(api, unknown), 401, "NOT_FOUND", unknown)
    assert_refused(await auth(api, "not-a-key"), 401, "MALFORMED", "not-a-key")
    typo = key[:-1] + ("a" if key[-1] != "a" else "b")
    assert_refused(await auth(api, typo), 401, "MALFORMED", typo)
    await api.client.post(f"/v1/keys/{data['id']}/disable", json={"reason": "late"})
    disabled = await auth(api, key)
    assert_refused(disabled, 401, "DISABLED", key)
    assert 'error="invalid_token"' in disabled.headers["WWW-Authenticate"]
    assert (await auth(api, other)).status_code == 200  # a different key is untouched
    soon = api.clock.now() + timedelta(seconds=1)
    expired, _ = await api.create_key(expires_at=soon.isoformat())
    api.clock.advance(2)
    assert_refused(await auth(api, expired), 401, "EXPIRED", expired)


async def test_a_revoked_key_is_refused_at_once(api: Api) -> None:
    key, data = await api.create_key()
    assert (await auth(api, key)).status_code == 200
    response = await api.client.request("DELETE", f"/v1/keys/{data['id']}", json={})
    assert response.status_code == 200
    assert_refused(await auth(api, key), 401, "REVOKED", key)


async def test_policy_refusals_are_403(api: Api) -> None:
    key, _ = await api.create_key(
        scopes=["chat"],
        policy={
            "models": {"allow": ["gpt-4*"]},
            "network": {"origins": ["https://*.example.com"], "user_agent": "^MyApp/"},
        },
    )
    good = {
        "Origin": "https://app.example.com",
        "User-Agent": "MyApp/1.0",
        "X-Keyplane-Model": "gpt-4o",
        "X-Keyplane-Scopes": "chat",
    }
    assert (await auth(api, key, **good)).status_code == 200
    cases = [
        ({"X-Keyplane-Scopes": "chat, admin"}, "INSUFFICIENT_SCOPE"),
        ({"X-Keyplane-Model": "claude-3-opus"}, "FORBIDDEN_MODEL"),
        ({"Origin": "https://evil.test"}, "ORIGIN_NOT_ALLOWED"),
        ({"User-Agent": "curl/8"}, "USER_AGENT_NOT_ALLOWED"),
    ]
    for extra, code in cases:
        assert_refused(await auth(api, key, **{**good, **extra}), 403, code, key)


async def test_rate_limited_is_429_with_retry_after_and_ratelimit_headers(api: Api) -> None:
    key, _ = await api.create_key(
        policy={"rate_limits": [{"name": "per_minute", "limit": 2, "period": 60}]}
    )
    first = await auth(api, key)
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "2"
    assert first.headers["RateLimit-Remaining"] == "1"
    assert (await auth(api, key)).status_code == 200
    refused = await auth(api, key)
    assert_refused(refused, 429, "RATE_LIMITED", key)
    assert refused.headers["Retry-After"] == "30"  # one emission interval, 60 s / 2
    assert refused.json()["retry_after"] == 30.0
    assert refused.headers["RateLimit-Limit"] == "2"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Reset"]) > 0
    api.clock.advance(30)
    assert (await auth(api, key)).status_code == 200


async def test_token_limited_is_429_too(api: Api) -> None:
    key, _ = await api.create_key(policy={"token_limits": {"input_per_minute": 1000}})
    estimate = {"X-Keyplane-Input-Tokens": "600", "X-Keyplane-Output-Tokens": "10"}
    assert (await auth(api, key, **estimate)).status_code == 200
    refused = await auth(api, key, **estimate)
    assert_refused(refused, 429, "TOKEN_LIMITED", key)
    assert int(refused.headers["Retry-After"]) >= 1


async def test_exhausted_budget_is_402(api: Api) -> None:
    key, data = await api.create_key(policy={"budget": {"credit_limit": 0.5}})
    assert_refused(await auth(api, key, **{"X-Keyplane-Cost": "0.75"}), 402, "BUDGET_EXCEEDED", key)
    assert (await auth(api, key, **{"X-Keyplane-Cost": "0.5"})).status_code == 200
    reported = await api.report(key_id=data["id"], request_id="r1", cost=0.5)
    assert reported.status_code == 201
    assert_refused(await auth(api, key), 402, "BUDGET_EXCEEDED", key)


async def test_the_gateway_must_hold_a_verify_management_key(api: Api) -> None:
    key, _ = await api.create_key()
    missing = await api.client.get("/v1/auth", headers={"Authorization": f"Bearer {key}"})
    assert_refused(missing, 401, "GATEWAY_UNAUTHENTICATED", key)
    wrong = await api.client.get(
        "/v1/auth",
        headers={"Authorization": f"Bearer {key}", "X-Keyplane-Gateway-Key": key},
    )
    assert_refused(wrong, 401, "GATEWAY_UNAUTHENTICATED", key)
    reader = await api.management_key("keys:read")
    forbidden = await api.client.get(
        "/v1/auth",
        headers={"Authorization": f"Bearer {key}", "X-Keyplane-Gateway-Key": reader},
    )
    assert_refused(forbidden, 403, "GATEWAY_FORBIDDEN", key)
    verifier = await api.management_key("verify")
    allowed = await api.client.get(
        "/v1/auth",
        headers={"Authorization": f"Bearer {key}", "X-Keyplane-Gateway-Key": verifier},
    )
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Keyplane-Cost", "lots"),
        ("X-Keyplane-Cost", "-1"),
        ("X-Keyplane-Cost", "0.0000001"),
        ("X-Keyplane-Cost", "NaN"),
        ("X-Keyplane-Cost", "1e400"),
        ("X-Keyplane-Scopes", " ".join(f"s{i}" for i in range(100))),
        ("X-Keyplane-Scopes", "a" * 200),
        ("X-Keyplane-Model", "m" * 500),
        ("X-Keyplane-Model", "gpt\x7f4"),
        ("X-Keyplane-Input-Tokens", "-1"),
        ("X-Keyplane-Input-Tokens", "1e3"),
        ("X-Keyplane-Input-Tokens", "1_000"),
        ("X-Keyplane-Output-Tokens", "99999999999"),
        ("X-Keyplane-Request-Id", "has space"),
        ("X-Keyplane-Request-Id", "r" * 300),
    ],
)
async def test_hostile_describing_headers_are_400(api: Api, header: str, value: str) -> None:
    key, _ = await api.create_key()
    response = await auth(api, key, **{header: value})
    assert_refused(response, 400, "INVALID_HEADER", key)
    assert value not in response.text
    assert header.lower() in response.json()["detail"].lower()


async def test_hostile_client_headers_never_break_the_answer(api: Api) -> None:
    key, _ = await api.create_key(owner="Zoë \u201cquotes\u201d")
    response = await auth(
        api,
        key,
        **{
            # 1,000 hops: long, yet inside the 32 KiB head cap (past it: 431, hostile/test_headers).
            "X-Forwarded-For": "1.2.3.4, " * 1000,
            "X-Real-IP": "not an ip",
            "Origin": "o" * 10_000,
            "Referer": ("\u00ff" * 50).encode("latin-1"),  # type: ignore[dict-item]
            "User-Agent": "u" * 5000,
        },
    )
    assert response.status_code == 200, response.text
    owner = response.headers["X-Keyplane-Owner"]
    assert owner.isascii() and "%" in owner
    oversized = "kp_live_" + "A" * 5000
    assert_refused(await auth(api, oversized), 401, "MALFORMED", oversized)


# -- settings-dependent behaviour (SQLite only: nothing here depends on the store) ------------


async def gateway_app(
    database: Database, clock: ManualClock, **settings: object
) -> AsyncIterator[Api]:
    app = create_app(database.settings(**settings), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.0.0.2", 40000)),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, database)


IP_POLICY = {"network": {"ip_allow": ["203.0.113.0/24"]}}


async def test_forwarded_for_is_ignored_without_trusted_proxies(
    sqlite_database: Database, clock: ManualClock
) -> None:
    async for api in gateway_app(sqlite_database, clock):
        key, _ = await api.create_key(policy=IP_POLICY)
        spoofed = await auth(api, key, **{"X-Forwarded-For": "203.0.113.5"})
        assert_refused(spoofed, 403, "IP_NOT_ALLOWED", key)
        real_ip = await auth(api, key, **{"X-Real-IP": "203.0.113.5"})
        assert_refused(real_ip, 403, "IP_NOT_ALLOWED", key)


async def test_forwarded_for_is_believed_from_a_trusted_proxy(
    sqlite_database: Database, clock: ManualClock
) -> None:
    async for api in gateway_app(sqlite_database, clock, trusted_proxies="10.0.0.0/8"):
        key, _ = await api.create_key(policy=IP_POLICY)
        assert (await auth(api, key, **{"X-Forwarded-For": "203.0.113.5"})).status_code == 200
        assert (await auth(api, key, **{"X-Real-IP": "203.0.113.5"})).status_code == 200
        through_two = await auth(api, key, **{"X-Forwarded-For": "203.0.113.5, 10.1.1.1"})
        assert through_two.status_code == 200
        # The client wrote the allowed address itself; the proxy appended the real one.
        forged = await auth(api, key, **{"X-Forwarded-For": "203.0.113.5, 198.51.100.9"})
        assert_refused(forged, 403, "IP_NOT_ALLOWED", key)
        garbage = await auth(api, key, **{"X-Forwarded-For": "203.0.113.5, <script>"})
        assert_refused(garbage, 403, "IP_NOT_ALLOWED", key)
        assert_refused(await auth(api, key), 403, "IP_NOT_ALLOWED", key)  # peer 10.0.0.2


async def test_the_key_can_come_from_another_header(
    sqlite_database: Database, clock: ManualClock
) -> None:
    async for api in gateway_app(sqlite_database, clock, auth_key_header="X-API-Key"):
        key, data = await api.create_key()
        response = await api.client.get("/v1/auth", headers={**GATEWAY, "X-API-Key": key})
        assert response.status_code == 200
        assert response.headers["X-Keyplane-Key-Id"] == data["id"]
        bearer_only = await auth(api, key)
        assert_refused(bearer_only, 401, "MISSING_KEY", key)


def test_gateway_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYPLANE_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.10 ::1")
    monkeypatch.setenv("KEYPLANE_AUTH_KEY_HEADER", "X-API-Key")
    settings = Settings()
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.10", "::1")
    assert len(settings.trusted_networks) == 3
    assert settings.auth_key_header == "X-API-Key"
    for bad in ("10.0.0.1/8", "bogus", "fe80::1%eth0"):
        with pytest.raises(ValidationError, match="trusted_proxies"):
            Settings(trusted_proxies=bad)  # type: ignore[arg-type]
    for header in ("", "X API Key", "X-Key\r\nInjected: 1", "k" * 100):
        with pytest.raises(ValidationError, match="auth_key_header"):
            Settings(auth_key_header=header)
