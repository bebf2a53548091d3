"""Hostile input over gRPC: a clear status, never a crash or an unbounded read."""

from __future__ import annotations

import random

import grpc

from keyplane.grpc.gen.envoy.service.auth.v3 import external_auth_pb2 as authz
from keyplane.grpc.gen.keyplane.v1 import keys_pb2 as pb
from tests.grpc_api.conftest import Grpc, bearer, failure, keyplane_code


async def test_a_message_over_the_size_limit_is_refused_unread(rpc_sqlite: Grpc) -> None:
    huge = pb.CreateKeyRequest(name="x", metadata_json='{"a": "' + "y" * 200_000 + '"}')
    error = await failure(rpc_sqlite.keys.CreateKey(huge, metadata=bearer()))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_garbage_bytes_are_an_invalid_argument(rpc_sqlite: Grpc) -> None:
    for path in ("/keyplane.v1.Keys/CreateKey", "/envoy.service.auth.v3.Authorization/Check"):
        call = rpc_sqlite.channel.unary_unary(path)(b"\xff\xff\xff\xff", metadata=bearer())
        error = await failure(call)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert keyplane_code(error) == "INVALID_MESSAGE"


async def test_bad_keys_and_fields_are_refused_cleanly(rpc_sqlite: Grpc) -> None:
    rpc = rpc_sqlite
    for key in ("", "kp_", "x" * 5000, "kp_live_\x00\n", "🔑" * 100):
        verdict = await rpc.verifier.Verify(pb.VerifyRequest(key=key[:4096]), metadata=bearer())
        assert not verdict.valid
    too_long = await failure(
        rpc.verifier.Verify(pb.VerifyRequest(key="k" * 5000), metadata=bearer())
    )
    assert too_long.code() is grpc.StatusCode.INVALID_ARGUMENT
    cost = await failure(
        rpc.verifier.Verify(pb.VerifyRequest(key="kp_x", cost="9e999999"), metadata=bearer())
    )
    assert cost.code() is grpc.StatusCode.INVALID_ARGUMENT
    for policy in ("[]", "{", '{"budget": {"credit_limit": -1}}', "[" * 10_000):
        error = await failure(
            rpc.keys.CreateKey(pb.CreateKeyRequest(name="p", policy_json=policy), metadata=bearer())
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, policy[:20]
    ref = await failure(rpc.keys.GetKey(pb.KeyRef(id_or_hash="../../etc"), metadata=bearer()))
    assert ref.code() is grpc.StatusCode.NOT_FOUND
    page = await failure(rpc.keys.ListKeys(pb.ListKeysRequest(limit=10**6), metadata=bearer()))
    assert page.code() is grpc.StatusCode.INVALID_ARGUMENT
    clear = await failure(
        rpc.keys.UpdateKey(pb.UpdateKeyRequest(id_or_hash="key_x", clear=["id"]), metadata=bearer())
    )
    assert clear.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_too_many_headers_in_a_check_are_denied(rpc_sqlite: Grpc) -> None:
    request = authz.CheckRequest()
    for index in range(500):
        request.attributes.request.http.headers[f"x-h-{index}"] = "v"
    response = await rpc_sqlite.authz.Check(request, metadata=bearer())
    assert response.denied_response.status.code == 400


async def test_an_unknown_method_is_unimplemented(rpc_sqlite: Grpc) -> None:
    error = await failure(rpc_sqlite.channel.unary_unary("/keyplane.v1.Keys/Nope")(b""))
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_calls_are_counted_by_method_and_code(rpc_sqlite: Grpc) -> None:
    await failure(rpc_sqlite.keys.GetKey(pb.KeyRef(id_or_hash="key_nope"), metadata=bearer()))
    metrics = (await rpc_sqlite.api.client.get("/metrics")).text
    assert (
        'keyplane_grpc_request_duration_seconds_count{code="NOT_FOUND",'
        'method="/keyplane.v1.Keys/GetKey"}' in metrics
    )


async def test_mutated_messages_never_end_in_an_internal_error(rpc_sqlite: Grpc) -> None:
    """Valid messages with random bytes flipped, on every method: each call ends with an
    answer or a clean status, never INTERNAL or UNKNOWN (a traceback's codes)."""
    rng = random.Random(18)
    samples = {
        "/keyplane.v1.Keys/CreateKey": pb.CreateKeyRequest(
            name="m", policy_json='{"budget": {"credit_limit": 5}}', metadata_json='{"a": 1}'
        ),
        "/keyplane.v1.Keys/UpdateKey": pb.UpdateKeyRequest(id_or_hash="key_x", clear=["plan"]),
        "/keyplane.v1.Keys/ListKeys": pb.ListKeysRequest(limit=5, owner="o"),
        "/keyplane.v1.Verifier/Verify": pb.VerifyRequest(key="kp_live_x", cost="1.5"),
        "/envoy.service.auth.v3.Authorization/Check": authz.CheckRequest(),
    }
    for path, sample in samples.items():
        raw = bytearray(sample.SerializeToString())
        method = rpc_sqlite.channel.unary_unary(path)
        for _ in range(40):
            mutated = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                if mutated:
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            try:
                await method(bytes(mutated), metadata=bearer())
            except grpc.aio.AioRpcError as exc:
                assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                    path,
                    exc.details(),
                )
