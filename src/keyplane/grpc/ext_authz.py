"""Envoy's external authorization over gRPC: ``envoy.service.auth.v3.Authorization/Check``.

The gRPC twin of forward auth (``api/routes/auth.py``): the API key is read from the original
request's headers as ``/v1/auth`` reads it (``integrations/http.py``: ``KEYPLANE_AUTH_KEY_HEADER``,
``Bearer`` in ``Authorization``), so are the gateway's ``X-Keyplane-*`` describing headers, and
the verdict becomes the same status, headers and problem+json body. The gateway (Envoy) proves
itself with a management key holding ``verify`` in the call's ``authorization`` metadata
(Envoy's ``grpc_service.initial_metadata``); without one, the call fails UNAUTHENTICATED and
Envoy answers its client 403 (or lets it through, if ``failure_mode_allow`` is set).

The messages are Keyplane's minimal wire-compatible definitions (``proto/third_party/``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from keyplane.domain.clock import Clock
from keyplane.grpc.gen.envoy.config.core.v3 import base_pb2 as core
from keyplane.grpc.gen.envoy.service.auth.v3 import external_auth_pb2 as authz
from keyplane.grpc.gen.envoy.type.v3 import http_status_pb2 as http_status
from keyplane.grpc.gen.google.rpc import status_pb2
from keyplane.grpc.keys import bearer, origin_of
from keyplane.grpc.observe import observed
from keyplane.grpc.status import abort, abort_with
from keyplane.integrations import http
from keyplane.integrations.decision import Decision
from keyplane.integrations.verifiers import InProcessVerifier
from keyplane.services.runtime import Runtime

CHECK = "/envoy.service.auth.v3.Authorization/Check"
#: Most headers read from one checked request (Envoy forwards the client's).
MAX_HEADERS = 200
_OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class ExtAuthz:
    """The ``Check`` handler over one runtime's management keys and verifier."""

    def __init__(self, runtime: Runtime) -> None:
        self._management = runtime.services.management
        self._verifier = runtime.services.verifier
        self._settings = runtime.settings
        self._clock: Clock = runtime.clock

    def handler(self) -> Any:
        async def call(raw: bytes, context: Any) -> bytes:
            async with observed(CHECK, context, self._settings.access_log):
                return await check_raw(raw, context)

        async def check_raw(raw: bytes, context: Any) -> bytes:
            request = authz.CheckRequest()
            try:
                request.ParseFromString(raw)
            except (DecodeError, RecursionError):
                await abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "INVALID_MESSAGE",
                    "the request is not a valid protobuf message",
                )
            try:
                principal = await self._management.authenticate(bearer(context), origin_of(context))
                verifier = InProcessVerifier(self._verifier, principal)  # needs `verify`
                response = await self.check(verifier, request)
            except Exception as exc:
                await abort_with(context, exc)
            serialized: bytes = response.SerializeToString()
            return serialized

        return grpc.unary_unary_rpc_method_handler(call)

    async def check(
        self, verifier: InProcessVerifier, request: authz.CheckRequest
    ) -> authz.CheckResponse:
        attributes = request.attributes
        headers = _headers(attributes.request.http)
        if headers is None:
            return self._invalid("too many request headers")
        key = http.read_key(headers, self._settings.auth_key_header)
        if key is None:
            return self._answer(http.MISSING_KEY)
        if len(key) > http.MAX_KEY_LENGTH:
            return self._answer(Decision("MALFORMED"))
        source = attributes.source.address.socket_address.address or None
        checked = attributes.request.http
        try:
            wanted = http.read_request(
                headers,
                source,
                self._settings.trusted_networks,
                self._settings.country_header,
                # Envoy states the client's request line and scheme itself (not headers).
                (checked.method or "GET", checked.path or "/"),
            )
        except http.BadGatewayHeader as exc:
            return self._invalid(str(exc))
        scheme = (checked.scheme or "").lower()
        if scheme in ("http", "https"):
            wanted = dataclasses.replace(wanted, scheme=scheme)
        return self._answer(await verifier.verify(key, wanted))

    def _answer(self, decision: Decision) -> authz.CheckResponse:
        options = [
            core.HeaderValueOption(
                header=core.HeaderValue(key=name.lower(), value=value), append_action=_OVERWRITE
            )
            for name, value in http.response_headers(decision, self._clock.now()).items()
        ]
        if decision.valid:
            return authz.CheckResponse(
                status=status_pb2.Status(code=grpc.StatusCode.OK.value[0]),
                ok_response=authz.OkHttpResponse(headers=options),
            )
        status = http.status_for(decision.code)
        return _denied(status, options, json.dumps(http.problem_body(decision)))

    def _invalid(self, detail: str) -> authz.CheckResponse:
        body = {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "code": "INVALID_HEADER",
            "detail": detail,
        }
        header = core.HeaderValue(key="x-keyplane-code", value="INVALID_HEADER")
        options = [core.HeaderValueOption(header=header, append_action=_OVERWRITE)]
        return _denied(400, options, json.dumps(body))


def _denied(status: int, options: list[core.HeaderValueOption], body: str) -> authz.CheckResponse:
    content_type = core.HeaderValue(key="content-type", value="application/problem+json")
    options = [*options, core.HeaderValueOption(header=content_type, append_action=_OVERWRITE)]
    code = grpc.StatusCode.UNAUTHENTICATED if status == 401 else grpc.StatusCode.PERMISSION_DENIED
    return authz.CheckResponse(
        status=status_pb2.Status(code=code.value[0], message=json.loads(body)["code"]),
        denied_response=authz.DeniedHttpResponse(
            status=http_status.HttpStatus(code=status),  # type: ignore[arg-type]
            headers=options,
            body=body,
        ),
    )


def _headers(request: Any) -> Mapping[str, str] | None:
    """The checked request's headers, names lower-cased; ``None`` when there are too many.

    Envoy sends ``headers`` (repeated ones joined by commas), or only ``header_map`` when its
    ``encode_raw_headers`` is on.
    """
    if request.headers:
        if len(request.headers) > MAX_HEADERS:
            return None
        return {name.lower(): value for name, value in request.headers.items()}
    entries = request.header_map.headers
    if len(entries) > MAX_HEADERS:
        return None
    found: dict[str, str] = {}
    for entry in entries:
        value = entry.value or entry.raw_value.decode("utf-8", "replace")
        name = entry.key.lower()
        found[name] = f"{found[name]},{value}" if name in found else value
    return found
