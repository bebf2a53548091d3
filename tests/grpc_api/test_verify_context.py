"""Verifier.Verify takes seed 004's context (signature, scheme, country, features, operation,
provider, routing, wait_ms) and answers directives and rotation_pending, as POST /v1/verify."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import grpc

from keyplane.domain import request_signing
from keyplane.grpc.gen.keyplane.v1 import keys_pb2 as pb
from tests.api.test_permissions import DIRECTIVES, PERMISSIONS
from tests.grpc_api.conftest import Grpc, bearer, failure, keyplane_code


async def _key(rpc: Grpc, policy: dict[str, Any], *, name: str = "k") -> pb.IssuedKey:
    issued: pb.IssuedKey = await rpc.keys.CreateKey(
        pb.CreateKeyRequest(name=name, policy_json=json.dumps(policy)), metadata=bearer()
    )
    return issued


async def _code(rpc: Grpc, **fields: Any) -> str:
    verdict = await rpc.verifier.Verify(pb.VerifyRequest(**fields), metadata=bearer())
    code: str = verdict.code
    return code


async def test_permissions_are_enforced_and_valid_verdicts_carry_directives(rpc: Grpc) -> None:
    issued = await _key(rpc, PERMISSIONS)
    key = issued.secret
    verdict = await rpc.verifier.Verify(
        pb.VerifyRequest(key=key, feature="chat_completion", features=["streaming"]),
        metadata=bearer(),
    )
    assert verdict.code == "VALID" and json.loads(verdict.directives_json) == DIRECTIVES
    assert verdict.rotation_pending is False
    assert await _code(rpc, key=key, feature="vision") == "FEATURE_NOT_ALLOWED"
    assert await _code(rpc, key=key, features=["embeddings", "vision"]) == "FEATURE_NOT_ALLOWED"
    assert await _code(rpc, key=key, operation="delete") == "OPERATION_NOT_ALLOWED"
    assert await _code(rpc, key=key, operation="export_data") == "OPERATION_NOT_ALLOWED"
    assert await _code(rpc, key=key, provider="mistral") == "PROVIDER_NOT_ALLOWED"
    assert await _code(rpc, key=key, provider="openai", auto_routing=True) == (
        "PROVIDER_NOT_ALLOWED"
    )
    assert await _code(rpc, key=key, provider="openai", fallback=True) == "PROVIDER_NOT_ALLOWED"
    assert await _code(rpc, key=key, provider="openai", operation="read") == "VALID"
    refused = await rpc.verifier.Verify(
        pb.VerifyRequest(key=key, feature="vision"), metadata=bearer()
    )
    assert json.loads(refused.directives_json) == {}  # directives only on a valid verdict


async def test_network_rules_take_scheme_and_country(rpc: Grpc) -> None:
    https = (await _key(rpc, {"network": {"require_https": True}})).secret
    assert await _code(rpc, key=https, scheme="http") == "HTTPS_REQUIRED"
    assert await _code(rpc, key=https, scheme="https") == "VALID"
    countries = (await _key(rpc, {"network": {"countries_deny": ["RU"]}})).secret
    assert await _code(rpc, key=countries, country="ru") == "COUNTRY_NOT_ALLOWED"
    assert await _code(rpc, key=countries, country="DE") == "VALID"


def _signature(secret: str, stamp: str, nonce: str) -> pb.Signature:
    digest = hashlib.sha256(b"{}").hexdigest()
    return pb.Signature(
        signature=request_signing.sign(secret, "POST", "/v1/chat", "", stamp, nonce, digest),
        method="POST",
        path="/v1/chat",
        query="",
        timestamp=stamp,
        nonce=nonce,
        body_sha256=digest,
    )


async def test_signed_requests_are_checked_once(rpc: Grpc) -> None:
    issued = await _key(rpc, {"signing": {"required": True, "max_timestamp_age": 300}})
    assert issued.HasField("signing_secret")
    key, secret = issued.secret, issued.signing_secret
    now = str(int(rpc.api.clock.now().timestamp()))
    good = _signature(secret, now, "grpc-nonce-0000000001")
    assert await _code(rpc, key=key) == "SIGNATURE_INVALID"
    assert await _code(rpc, key=key, signature=good) == "VALID"
    assert await _code(rpc, key=key, signature=good) == "NONCE_REUSED"
    forged = _signature("kps_" + "x" * 43, now, "grpc-nonce-0000000002")
    assert await _code(rpc, key=key, signature=forged) == "SIGNATURE_INVALID"
    late = _signature(secret, str(int(now) - 400), "grpc-nonce-0000000003")
    assert await _code(rpc, key=key, signature=late) == "TIMESTAMP_EXPIRED"


async def test_queued_waits_and_rotation_pending(rpc: Grpc) -> None:
    issued = await _key(rpc, {"concurrency": {"max_parallel": 1, "max_queued": 1}})
    first = await rpc.verifier.Verify(
        pb.VerifyRequest(key=issued.secret, acquire_concurrency=True, request_id="q-1"),
        metadata=bearer(),
    )
    assert first.code == "VALID"
    # The slot is taken; a verify that asks to wait 0 ms is refused at once.
    busy = await rpc.verifier.Verify(
        pb.VerifyRequest(key=issued.secret, acquire_concurrency=True, wait_ms=0), metadata=bearer()
    )
    assert busy.code == "CONCURRENCY_EXCEEDED"

    rotated = await rpc.keys.RotateKey(
        pb.RotateKeyRequest(id_or_hash=issued.key.id, grace_period_seconds=3600), metadata=bearer()
    )
    old = await rpc.verifier.Verify(pb.VerifyRequest(key=issued.secret), metadata=bearer())
    assert old.code == "VALID" and old.rotation_pending is True
    new = await rpc.verifier.Verify(pb.VerifyRequest(key=rotated.secret), metadata=bearer())
    assert new.code == "VALID" and new.rotation_pending is False


async def test_hostile_context_is_an_invalid_argument(rpc: Grpc) -> None:
    key = (await _key(rpc, {})).secret
    for fields in (
        {"country": "DEU"},
        {"country": "1x"},
        {"scheme": "gopher"},
        {"feature": "Chat Completion"},
        {"features": [f"f{i}" for i in range(33)]},
        {"operation": "x" * 65},
        {"provider": "a/b"},
        {"wait_ms": 30_001},
        {"signature": pb.Signature(signature="0" * 64, method="POST", path="/", nonce="n" * 257)},
        {"signature": pb.Signature(signature="0" * 129, method="POST", path="/")},
        {"signature": pb.Signature(signature="0" * 64, method="", path="/")},
    ):
        error = await failure(
            rpc.verifier.Verify(pb.VerifyRequest(key=key, **fields), metadata=bearer())
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, fields
        assert keyplane_code(error) == "VALIDATION_FAILED", fields
    # Within the bounds but malformed: a verdict, not an error.
    odd = pb.Signature(signature="zz", method="POST", path="/", nonce="short")
    assert await _code(rpc, key=key, signature=odd) == "VALID"  # the policy asks no signature


async def test_a_budget_limit_shows_its_carry(rpc: Grpc) -> None:
    rollover = {"enabled": True, "max_carry": 3}
    budget = {"credit_limit": 5, "reset": "daily", "rollover": rollover}
    key, data = await rpc.api.create_key(policy={"budget": budget})
    spent = await rpc.api.client.post(
        f"/v1/keys/{data['id']}/credits", json={"amount": -2, "reason": "spent"}
    )
    assert spent.status_code == 201, spent.text
    rpc.api.clock.advance(86_400)  # tomorrow carries min(3, 5 - 2) = 3
    verdict = await rpc.verifier.Verify(pb.VerifyRequest(key=key, cost="0"), metadata=bearer())
    [limit] = verdict.limits
    assert (limit.limit, limit.carry, limit.remaining) == ("8.0", "3.0", "8.0")
