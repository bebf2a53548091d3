"""keyplane.v1.Keys and Verifier through a real gRPC client, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import grpc

from keyplane.grpc.gen.keyplane.v1 import keys_pb2 as pb
from tests.grpc_api.conftest import Grpc, bearer, failure, keyplane_code


async def test_a_key_lives_its_whole_life_over_grpc(rpc: Grpc) -> None:
    auth = bearer()
    issued = await rpc.keys.CreateKey(
        pb.CreateKeyRequest(
            name="grpc key",
            owner="cust-1",
            tags=["a", "b"],
            scopes=["chat"],
            metadata_json='{"tier": "gold"}',
            policy_json='{"budget": {"credit_limit": 999999999999.999999, "reset": "monthly"}}',
        ),
        metadata=auth,
    )
    assert issued.secret
    key = issued.key
    assert (key.name, key.owner, list(key.tags), key.status) == (
        "grpc key",
        "cust-1",
        ["a", "b"],
        "active",
    )
    assert json.loads(key.metadata_json) == {"tier": "gold"}
    # Credits keep every digit: the text, not a float.
    assert '"credit_limit":999999999999.999999' in key.policy_json
    assert key.limit == "999999999999.999999"
    assert key.usage.total == "0.0"

    got = await rpc.keys.GetKey(pb.KeyRef(id_or_hash=key.id), metadata=auth)
    assert got.id == key.id and got.hash == key.hash
    rest = (await rpc.api.client.get(f"/v1/keys/{key.id}")).json()["data"]
    assert rest["name"] == got.name and rest["status"] == got.status

    page = await rpc.keys.ListKeys(pb.ListKeysRequest(owner="cust-1", limit=10), metadata=auth)
    assert [k.id for k in page.keys] == [key.id] and not page.has_more

    updated = await rpc.keys.UpdateKey(
        pb.UpdateKeyRequest(id_or_hash=key.id, name="renamed", set_tags=True, clear=["owner"]),
        metadata=auth,
    )
    assert updated.name == "renamed" and list(updated.tags) == [] and not updated.HasField("owner")

    verdict = await rpc.verifier.Verify(pb.VerifyRequest(key=issued.secret), metadata=auth)
    assert verdict.valid and verdict.code == "VALID" and verdict.key_id == key.id

    rotated = await rpc.keys.RotateKey(pb.RotateKeyRequest(id_or_hash=key.id), metadata=auth)
    assert rotated.secret != issued.secret and rotated.key.id == key.id
    old = await rpc.verifier.Verify(pb.VerifyRequest(key=issued.secret), metadata=auth)
    assert not old.valid

    disabled = await rpc.keys.DisableKey(
        pb.DisableKeyRequest(id_or_hash=key.id, reason="paused"), metadata=auth
    )
    assert disabled.status == "disabled" and disabled.disabled_reason == "paused"
    refused = await rpc.verifier.Verify(pb.VerifyRequest(key=rotated.secret), metadata=auth)
    assert (refused.valid, refused.code) == (False, "DISABLED")

    enabled = await rpc.keys.EnableKey(pb.KeyRef(id_or_hash=key.id), metadata=auth)
    assert enabled.status == "active"

    revoked = await rpc.keys.RevokeKey(
        pb.RevokeKeyRequest(id_or_hash=key.id, reason="done"), metadata=auth
    )
    assert revoked.status == "revoked" and revoked.revoked_reason == "done"
    gone = await rpc.verifier.Verify(pb.VerifyRequest(key=rotated.secret), metadata=auth)
    assert gone.code == "REVOKED"


async def test_verify_reserves_exact_credits_and_reports_limits(rpc: Grpc) -> None:
    auth = bearer()
    issued = await rpc.keys.CreateKey(
        pb.CreateKeyRequest(
            name="budgeted", policy_json='{"budget": {"credit_limit": 10, "reset": "monthly"}}'
        ),
        metadata=auth,
    )
    verdict = await rpc.verifier.Verify(
        pb.VerifyRequest(key=issued.secret, cost="2.000001", request_id="r-1"), metadata=auth
    )
    assert verdict.valid and verdict.request_id == "r-1"
    [budget] = [limit for limit in verdict.limits if limit.kind == "budget"]
    assert (budget.limit, budget.remaining) == ("10.0", "7.999999")


async def test_errors_carry_grpc_codes_and_the_keyplane_code(rpc: Grpc) -> None:
    auth = bearer()
    missing = await failure(rpc.keys.GetKey(pb.KeyRef(id_or_hash="key_nope"), metadata=auth))
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert keyplane_code(missing) == "KEY_NOT_FOUND"

    invalid = await failure(rpc.keys.CreateKey(pb.CreateKeyRequest(name=""), metadata=auth))
    assert invalid.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert keyplane_code(invalid) == "VALIDATION_FAILED"

    issued = await rpc.keys.CreateKey(pb.CreateKeyRequest(name="k"), metadata=auth)
    await rpc.keys.RevokeKey(pb.RevokeKeyRequest(id_or_hash=issued.key.id), metadata=auth)
    conflict = await failure(rpc.keys.EnableKey(pb.KeyRef(id_or_hash=issued.key.id), metadata=auth))
    assert conflict.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert keyplane_code(conflict)


async def test_management_key_authorization_is_the_rest_one(rpc: Grpc) -> None:
    anonymous = await failure(rpc.keys.ListKeys(pb.ListKeysRequest()))
    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED
    assert keyplane_code(anonymous) == "UNAUTHENTICATED"
    wrong = await failure(rpc.keys.ListKeys(pb.ListKeysRequest(), metadata=bearer("kp_nope")))
    assert wrong.code() is grpc.StatusCode.UNAUTHENTICATED

    verify_only = await rpc.api.management_key("verify")
    denied = await failure(
        rpc.keys.CreateKey(pb.CreateKeyRequest(name="x"), metadata=bearer(verify_only))
    )
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert keyplane_code(denied) == "MISSING_SCOPE"

    reader = await rpc.api.management_key("keys:read")
    refused = await failure(
        rpc.verifier.Verify(pb.VerifyRequest(key="kp_x"), metadata=bearer(reader))
    )
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED

    # A write-only caller sees what REST shows it: the id and status, not the record.
    writer = await rpc.api.management_key("keys:write")
    issued = await rpc.keys.CreateKey(pb.CreateKeyRequest(name="w"), metadata=bearer(writer))
    assert issued.secret and issued.key.id and issued.key.status == "active"
    assert issued.key.name == ""


async def test_an_idempotent_create_replays_over_grpc_and_rest_alike(rpc: Grpc) -> None:
    auth = bearer()
    request = pb.CreateKeyRequest(
        name="once", expires_at="2030-01-31T00:00:00Z", idempotency_key="create-1"
    )
    first = await rpc.keys.CreateKey(request, metadata=auth)
    again = await rpc.keys.CreateKey(request, metadata=auth)
    assert (again.secret, again.key.id, again.replayed) == (first.secret, first.key.id, True)
    assert first.key.expires_at == "2030-01-31T00:00:00Z"
    rest = await rpc.api.client.post(
        "/v1/keys",
        json={"name": "once", "expires_at": "2030-01-31T00:00:00Z"},
        headers={"Idempotency-Key": "create-1"},
    )
    assert rest.status_code == 200 and rest.json()["key"] == first.secret
    reused = await failure(
        rpc.keys.CreateKey(
            pb.CreateKeyRequest(name="other", idempotency_key="create-1"), metadata=auth
        )
    )
    assert reused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert keyplane_code(reused) == "IDEMPOTENCY_KEY_REUSED"
