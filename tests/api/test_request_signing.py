"""Signed requests (policy section ``signing``): the signing secret shown with the key, verify's
SIGNATURE_INVALID / TIMESTAMP_EXPIRED / NONCE_REUSED, rotation, forward auth with the SDK's
signer, and hostile signing parts."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from keyplane.api.app import create_app
from keyplane.client import AsyncClient
from keyplane.client.signing import SignedRequests
from keyplane.domain import request_signing
from keyplane.domain.clock import ManualClock
from keyplane.integrations.decision import AuthRequest
from keyplane.integrations.remote import RemoteVerifier
from tests.conftest import ROOT_KEY, Api, Database

SIGNING = {"signing": {"required": True, "max_timestamp_age": 300}}
GATEWAY = {"X-Keyplane-Gateway-Key": ROOT_KEY}
_nonces = itertools.count()


def fresh_nonce() -> str:
    return f"nonce-{next(_nonces):012d}-abcdef"


def signed(
    secret: str,
    now: int,
    *,
    nonce: str | None = None,
    path: str = "/v1/chat/completions",
    timestamp: int | None = None,
    body: bytes = b'{"model":"gpt-4o"}',
) -> dict[str, Any]:
    """The ``signature`` object of a verify request, signed with ``secret``."""
    nonce = fresh_nonce() if nonce is None else nonce
    stamp = str(now if timestamp is None else timestamp)
    digest = hashlib.sha256(body).hexdigest()
    return {
        "signature": request_signing.sign(secret, "POST", path, "a=1", stamp, nonce, digest),
        "method": "POST",
        "path": path,
        "query": "a=1",
        "timestamp": stamp,
        "nonce": nonce,
        "body_sha256": digest,
    }


async def test_signed_requests_on_verify(api: Api) -> None:
    response = await api.client.post(
        "/v1/keys", json={"name": "signed", "policy": SIGNING}, headers={"Idempotency-Key": "s1"}
    )
    assert response.status_code == 201, response.text
    key, secret = response.json()["key"], response.json()["signing_secret"]
    assert secret.startswith("kps_") and len(secret) > 40
    unsigned = await api.client.post("/v1/keys", json={"name": "plain"})
    assert "signing_secret" not in unsigned.json()  # only keys that sign get one
    # An idempotent retry shows the same signing secret again.
    again = await api.client.post(
        "/v1/keys", json={"name": "signed", "policy": SIGNING}, headers={"Idempotency-Key": "s1"}
    )
    assert again.json()["signing_secret"] == secret

    now = int(api.clock.now().timestamp())
    assert (await api.verify(key))["code"] == "SIGNATURE_INVALID"
    first = signed(secret, now)
    assert (await api.verify(key, signature=first))["code"] == "VALID"
    assert (await api.verify(key, signature=first))["code"] == "NONCE_REUSED"
    wrong = signed("kps_" + "x" * 43, now)
    assert (await api.verify(key, signature=wrong))["code"] == "SIGNATURE_INVALID"
    tampered = {**signed(secret, now), "path": "/v1/admin"}
    assert (await api.verify(key, signature=tampered))["code"] == "SIGNATURE_INVALID"
    no_nonce = signed(secret, now)
    del no_nonce["nonce"]
    assert (await api.verify(key, signature=no_nonce))["code"] == "SIGNATURE_INVALID"
    for skew, code in ((-301, "TIMESTAMP_EXPIRED"), (301, "TIMESTAMP_EXPIRED"), (-300, "VALID")):
        result = await api.verify(key, signature=signed(secret, now, timestamp=now + skew))
        assert result["code"] == code, skew
    # A refused request does not use its nonce up; a good one does.
    late = signed(secret, now, timestamp=now - 400)
    assert (await api.verify(key, signature=late))["code"] == "TIMESTAMP_EXPIRED"

    rotated = await api.client.post(
        f"/v1/keys/{response.json()['data']['id']}/rotate", json={"grace_period_seconds": 3600}
    )
    assert rotated.status_code == 200, rotated.text
    new_key, new_secret = rotated.json()["key"], rotated.json()["signing_secret"]
    assert new_secret.startswith("kps_") and new_secret != secret
    # Each key secret keeps its own signing secret: the old pair works through the grace.
    assert (await api.verify(key, signature=signed(secret, now)))["code"] == "VALID"
    assert (await api.verify(new_key, signature=signed(new_secret, now)))["code"] == "VALID"
    assert (await api.verify(new_key, signature=signed(secret, now)))["code"] == "SIGNATURE_INVALID"

    audit = await api.client.get("/v1/audit")
    assert secret not in audit.text and new_secret not in audit.text


async def test_forward_auth_checks_the_sdk_signature_once(api: Api) -> None:
    response = await api.client.post("/v1/keys", json={"name": "fa", "policy": SIGNING})
    key, secret = response.json()["key"], response.json()["signing_secret"]
    now = api.clock.now().timestamp()
    # The customer's request as the SDK signs it, to the operator's API behind a gateway.
    request = httpx.Request(
        "POST", "https://api.example.com/v1/chat/completions?stream=true", json={"model": "m"}
    )
    signer = SignedRequests(key, secret, now=lambda: now)
    request = next(signer.auth_flow(request))

    def gateway(request: httpx.Request, **line: str) -> dict[str, str]:
        """What Traefik/nginx send: the client's headers plus the original request line."""
        return {**GATEWAY, **{k: v for k, v in request.headers.items() if k != "host"}, **line}

    traefik = gateway(
        request,
        **{"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/v1/chat/completions?stream=true"},
    )
    allowed = await api.client.get("/v1/auth", headers=traefik)
    assert allowed.status_code == 200, allowed.text
    replayed = await api.client.get("/v1/auth", headers=traefik)
    assert replayed.status_code == 401
    assert replayed.json()["code"] == "NONCE_REUSED"

    # nginx: X-Original-Method/-URI; Envoy: the original method and path under /v1/auth.
    for headers, method, path in (
        (
            {"X-Original-Method": "POST", "X-Original-URI": "/v1/chat/completions?stream=true"},
            "GET",
            "/v1/auth",
        ),
        ({}, "POST", "/v1/auth/v1/chat/completions?stream=true"),
    ):
        request = next(
            signer.auth_flow(
                httpx.Request(
                    "POST",
                    "https://api.example.com/v1/chat/completions?stream=true",
                    json={"model": "m"},
                )
            )
        )
        answer = await api.client.request(method, path, headers=gateway(request, **headers))
        assert answer.status_code == 200, (headers, answer.text)
    # Another path than the one signed: refused.
    request = next(signer.auth_flow(httpx.Request("GET", "https://api.example.com/v1/models")))
    moved = gateway(request, **{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/admin"})
    refused = await api.client.get("/v1/auth", headers=moved)
    assert (refused.status_code, refused.json()["code"]) == (401, "SIGNATURE_INVALID")


@pytest.fixture
async def sqlite_api(sqlite_database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    """Malformed input is refused before any storage: one backend is enough for it."""
    app = create_app(sqlite_database.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, sqlite_database)


async def test_hostile_signing_parts(sqlite_api: Api) -> None:
    api = sqlite_api
    response = await api.client.post("/v1/keys", json={"name": "h", "policy": SIGNING})
    key, secret = response.json()["key"], response.json()["signing_secret"]
    now = int(api.clock.now().timestamp())

    async def code(signature: dict[str, Any]) -> object:
        answer = await api.client.post("/v1/verify", json={"key": key, "signature": signature})
        if answer.status_code == 422:
            assert answer.headers["content-type"] == "application/problem+json"
            return 422
        assert answer.status_code == 200, answer.text
        return answer.json()["code"]

    # Nonces of every size: 16-128 URL-safe characters pass, others are invalid, past 256 a 422.
    for size in (0, 1, 8, 15, 16, 17, 64, 127, 128, 129, 200, 256, 257, 4096):
        nonce = (f"{size:04d}" + "n" * size)[:size]
        expected = "VALID" if 16 <= size <= 128 else "SIGNATURE_INVALID" if size <= 256 else 422
        assert await code(signed(secret, now, nonce=nonce)) == expected, size
    for nonce in ("a" * 15 + " ", "ä" * 20, "{nonce}" * 4, "a:b" * 8, "a/b" * 8, "\x00" * 20):
        assert await code(signed(secret, now, nonce=nonce)) == "SIGNATURE_INVALID", nonce
    good = signed(secret, now)
    for field, value, expected in [
        ("signature", "", "SIGNATURE_INVALID"),
        ("signature", "zz" * 32, "SIGNATURE_INVALID"),
        ("signature", "a" * 63, "SIGNATURE_INVALID"),
        ("signature", "a" * 65, "SIGNATURE_INVALID"),
        ("signature", "a" * 129, 422),
        ("signature", "é" * 64, "SIGNATURE_INVALID"),
        ("method", "GE T", "SIGNATURE_INVALID"),
        ("method", "X" * 17, 422),
        ("path", "no-slash", "SIGNATURE_INVALID"),
        ("path", "/a b", "SIGNATURE_INVALID"),
        ("path", "/" + "a" * 4096, 422),
        ("query", "a=\n", "SIGNATURE_INVALID"),
        ("timestamp", "-1", "SIGNATURE_INVALID"),
        ("timestamp", "1e9", "SIGNATURE_INVALID"),
        ("timestamp", "9" * 17, 422),
        ("body_sha256", "0" * 63, "SIGNATURE_INVALID"),
        ("body_sha256", 5, 422),
    ]:
        assert await code({**good, field: value}) == expected, (field, value)
    assert await code({**good, "signature": good["signature"].upper()}) == "VALID"
    # Forward auth: oversized or malformed signing headers are a refusal, never a 500.
    base = {**GATEWAY, "Authorization": f"Bearer {key}", "X-Forwarded-Method": "POST"}
    for extra in (
        {"X-Keyplane-Signature": "a" * 64, "X-Keyplane-Nonce": "n" * 5000},
        {"X-Keyplane-Signature": "a" * 64, "X-Forwarded-Uri": "/" + "p" * 9000},
        {"X-Keyplane-Signature": "x" * 10_000},
        {"X-Keyplane-Signature": "a" * 64, "X-Keyplane-Timestamp": "9" * 500},
        {"X-Keyplane-Signature": "a" * 64, "X-Forwarded-Method": "P O S T"},
    ):
        answer = await api.client.get("/v1/auth", headers={**base, **extra})
        assert (answer.status_code, answer.json()["code"]) == (401, "SIGNATURE_INVALID"), extra
    for policy in (
        {"signing": {"algorithm": "HMAC-SHA1"}},
        {"signing": {"max_timestamp_age": 0}},
        {"signing": {"max_timestamp_age": 86_401}},
        {"signing": {"require_timestamp": False}},  # a nonce needs a timestamp
        {"signing": {"required": "yes"}},
    ):
        answer = await api.client.post("/v1/keys", json={"name": "bad", "policy": policy})
        assert answer.status_code == 422, (policy, answer.text)


async def test_the_remote_verifier_passes_signing_and_transport_parts(sqlite_api: Api) -> None:
    api = sqlite_api
    policy = {**SIGNING, "network": {"require_https": True, "countries_allow": ["DE"]}}
    now = int(api.clock.now().timestamp())
    transport = httpx.ASGITransport(app=api.app)  # type: ignore[arg-type]
    async with AsyncClient("http://keyplane.test", ROOT_KEY, transport=transport) as client:
        created = await client.keys.create("remote", policy=policy)
        key, secret = created.key, created.signing_secret
        assert secret is not None and secret.startswith("kps_")
        assert secret not in repr(created)
        signed_parts = request_signing.signed_request(**signed(secret, now))
        verifier = RemoteVerifier(client)
        wanted = AuthRequest(scheme="https", country="DE", signed=signed_parts)
        assert (await verifier.verify(key, wanted)).code == "VALID"
        assert (await verifier.verify(key, wanted)).code == "NONCE_REUSED"
        other = dataclasses.replace(
            wanted, signed=request_signing.signed_request(**signed(secret, now))
        )
        assert (await verifier.verify(key, dataclasses.replace(other, country="FR"))).code == (
            "COUNTRY_NOT_ALLOWED"
        )
