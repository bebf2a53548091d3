"""envoy.service.auth.v3.Authorization/Check through a client built from the same
definitions (proto/third_party), the way Envoy calls it."""

from __future__ import annotations

import hashlib
import json

import grpc

from keyplane.domain import request_signing
from keyplane.domain.clock import ManualClock
from keyplane.grpc.gen.envoy.config.core.v3 import address_pb2, base_pb2
from keyplane.grpc.gen.envoy.service.auth.v3 import attribute_context_pb2 as attrs
from keyplane.grpc.gen.envoy.service.auth.v3 import external_auth_pb2 as authz
from keyplane.grpc.gen.keyplane.v1 import keys_pb2 as pb
from tests.grpc_api.conftest import Grpc, bearer, failure, keyplane_code


def check(headers: dict[str, str], source: str = "203.0.113.7") -> authz.CheckRequest:
    return authz.CheckRequest(
        attributes=attrs.AttributeContext(
            source=attrs.AttributeContext.Peer(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=source, port_value=5555)
                )
            ),
            request=attrs.AttributeContext.Request(
                http=attrs.AttributeContext.HttpRequest(
                    method="POST", path="/v1/chat", host="api.example", headers=headers
                )
            ),
        )
    )


def added(options: list[base_pb2.HeaderValueOption]) -> dict[str, str]:
    return {option.header.key: option.header.value for option in options}


async def test_a_valid_key_is_allowed_with_who_it_is(rpc_sqlite: Grpc) -> None:
    rpc = rpc_sqlite
    issued = await rpc.keys.CreateKey(
        pb.CreateKeyRequest(
            name="edge",
            owner="cust-9",
            policy_json='{"rate_limits": [{"name": "rpm", "limit": 5, "period": "1m"}]}',
        ),
        metadata=bearer(),
    )
    response = await rpc.authz.Check(
        check({"authorization": f"Bearer {issued.secret}"}), metadata=bearer()
    )
    assert response.status.code == 0 and response.HasField("ok_response")
    headers = added(list(response.ok_response.headers))
    assert headers["x-keyplane-code"] == "VALID"
    assert headers["x-keyplane-key-id"] == issued.key.id
    assert headers["x-keyplane-owner"] == "cust-9"
    assert headers["ratelimit-remaining"] == "4"


async def test_refusals_are_denied_with_the_forward_auth_status_and_body(
    rpc_sqlite: Grpc,
) -> None:
    rpc = rpc_sqlite
    missing = await rpc.authz.Check(check({}), metadata=bearer())
    assert missing.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert missing.denied_response.status.code == 401
    body = json.loads(missing.denied_response.body)
    assert body["code"] == "MISSING_KEY" and body["status"] == 401
    assert added(list(missing.denied_response.headers))["content-type"] == (
        "application/problem+json"
    )

    bogus = await rpc.authz.Check(check({"authorization": "Bearer kp_bogus"}), metadata=bearer())
    assert bogus.denied_response.status.code == 401
    assert "kp_bogus" not in bogus.denied_response.body

    issued = await rpc.keys.CreateKey(pb.CreateKeyRequest(name="d"), metadata=bearer())
    await rpc.keys.DisableKey(pb.DisableKeyRequest(id_or_hash=issued.key.id), metadata=bearer())
    disabled = await rpc.authz.Check(
        check({"authorization": f"Bearer {issued.secret}"}), metadata=bearer()
    )
    assert json.loads(disabled.denied_response.body)["code"] == "DISABLED"

    bad_header = await rpc.authz.Check(
        check({"authorization": f"Bearer {issued.secret}", "x-keyplane-cost": "lots"}),
        metadata=bearer(),
    )
    assert bad_header.denied_response.status.code == 400
    assert json.loads(bad_header.denied_response.body)["code"] == "INVALID_HEADER"


async def test_raw_header_map_is_read_when_envoy_sends_it(rpc_sqlite: Grpc) -> None:
    rpc = rpc_sqlite
    issued = await rpc.keys.CreateKey(pb.CreateKeyRequest(name="raw"), metadata=bearer())
    request = check({})
    request.attributes.request.http.header_map.headers.append(
        base_pb2.HeaderValue(key="authorization", raw_value=f"Bearer {issued.secret}".encode())
    )
    response = await rpc.authz.Check(request, metadata=bearer())
    assert response.HasField("ok_response")


async def test_the_gateway_itself_must_hold_verify(rpc_sqlite: Grpc) -> None:
    rpc = rpc_sqlite
    anonymous = await failure(rpc.authz.Check(check({})))
    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED
    reader = await rpc.api.management_key("keys:read")
    denied = await failure(rpc.authz.Check(check({}), metadata=bearer(reader)))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert keyplane_code(denied) == "MISSING_SCOPE"


async def test_signed_requests_and_https_through_grpc_ext_authz(
    rpc_sqlite: Grpc, clock: ManualClock
) -> None:
    rpc = rpc_sqlite
    policy = '{"signing": {"required": true}, "network": {"require_https": true}}'
    issued = await rpc.keys.CreateKey(
        pb.CreateKeyRequest(name="signed", policy_json=policy), metadata=bearer()
    )
    assert issued.signing_secret.startswith("kps_")
    stamp = str(int(clock.now().timestamp()))
    digest = hashlib.sha256(b"").hexdigest()
    signature = request_signing.sign(
        issued.signing_secret, "POST", "/v1/chat", "q=1", stamp, "grpc-nonce-000001", digest
    )
    headers = {
        "authorization": f"Bearer {issued.secret}",
        "x-keyplane-signature": signature,
        "x-keyplane-timestamp": stamp,
        "x-keyplane-nonce": "grpc-nonce-000001",
    }

    def signed_check(scheme: str) -> authz.CheckRequest:
        request = check(headers)
        request.attributes.request.http.path = "/v1/chat?q=1"
        request.attributes.request.http.scheme = scheme
        return request

    plain = await rpc.authz.Check(signed_check("http"), metadata=bearer())
    assert json.loads(plain.denied_response.body)["code"] == "HTTPS_REQUIRED"
    allowed = await rpc.authz.Check(signed_check("https"), metadata=bearer())
    assert allowed.HasField("ok_response"), allowed
    replayed = await rpc.authz.Check(signed_check("https"), metadata=bearer())
    assert replayed.denied_response.status.code == 401
    assert json.loads(replayed.denied_response.body)["code"] == "NONCE_REUSED"
