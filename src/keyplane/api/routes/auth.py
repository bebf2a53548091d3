"""``/v1/auth``: forward authentication for nginx ``auth_request``, Traefik ForwardAuth and
Envoy ext_authz (HTTP). The answer is the status code; see docs/gateway.md.

Envoy sends the original method and path under the configured prefix, so every method and
every sub-path is accepted and means the same thing.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from keyplane.api.deps import Gateway, GatewayDep
from keyplane.api.problems import PROBLEM_MEDIA_TYPE, problem
from keyplane.domain.clock import Clock
from keyplane.domain.tenancy import Principal
from keyplane.errors import AuthenticationError, PermissionDeniedError
from keyplane.integrations import http
from keyplane.integrations.decision import Decision
from keyplane.integrations.verifiers import InProcessVerifier
from keyplane.services.authz import require_scope
from keyplane.services.management import ManagementKeys

router = APIRouter(prefix="/v1", tags=["gateway (forward auth)"])

#: The header carrying the gateway's own management key (scope ``verify``), which decides the
#: organization and projects whose API keys it may check. The gateway sets it, never the client.
GATEWAY_KEY_HEADER = "x-keyplane-gateway-key"
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


# Documented once, as GET /v1/auth (api/openapi.py says that every method and sub-path means
# the same): one operation per method would only repeat it; docs/gateway.md is its reference.
@router.get("/auth")
async def forward_auth(request: Request, gateway: GatewayDep) -> Response:
    """Forward auth: 200 when the request's API key may be used now, else 401/402/403/429."""
    return await _decide(request, gateway)


@router.api_route("/auth", methods=[m for m in _METHODS if m != "GET"], include_in_schema=False)
async def forward_auth_other_methods(request: Request, gateway: GatewayDep) -> Response:
    """Forward auth for the other methods (nginx and Traefik keep the client's)."""
    return await _decide(request, gateway)


@router.api_route("/auth/{path:path}", methods=_METHODS, include_in_schema=False)
async def forward_auth_any_path(request: Request, gateway: GatewayDep) -> Response:
    """Forward auth under a prefix (Envoy appends the original path)."""
    return await _decide(request, gateway)


async def _decide(request: Request, gateway: Gateway) -> Response:
    principal = await _gateway(request, gateway.management)
    if isinstance(principal, Response):
        return principal
    settings = gateway.settings
    key = http.read_key(request.headers, settings.auth_key_header)
    if key is None:
        return _answer(http.MISSING_KEY, gateway.clock)
    if len(key) > http.MAX_KEY_LENGTH:
        return _answer(Decision("MALFORMED"), gateway.clock)
    peer = request.client.host if request.client else None
    try:
        wanted = http.read_request(
            request.headers,
            peer,
            settings.trusted_networks,
            settings.country_header,
            http.original_request_line(request.headers, request.method, _envoy_target(request)),
        )
    except http.BadGatewayHeader as exc:
        return problem(400, "INVALID_HEADER", str(exc), {"X-Keyplane-Code": "INVALID_HEADER"})
    decision = await InProcessVerifier(gateway.verifier, principal).verify(key, wanted)
    return _answer(decision, gateway.clock)


def _envoy_target(request: Request) -> str:
    """The original target Envoy appends under ``/v1/auth`` (``/`` when nothing is)."""
    path = request.url.path
    suffix = path[path.find("/v1/auth") + len("/v1/auth") :] or "/"
    query = request.url.query
    return f"{suffix}?{query}" if query else suffix


async def _gateway(request: Request, management: ManagementKeys) -> Principal | Response:
    """The gateway's principal, or the problem response that refuses the gateway itself."""
    try:
        principal = await management.authenticate(request.headers.get(GATEWAY_KEY_HEADER))
    except AuthenticationError:
        return problem(
            401,
            "GATEWAY_UNAUTHENTICATED",
            "the gateway's management key (X-Keyplane-Gateway-Key) is missing or invalid",
            {
                "WWW-Authenticate": 'Bearer realm="keyplane-gateway"',
                "X-Keyplane-Code": "GATEWAY_UNAUTHENTICATED",
            },
        )
    if not _may_verify(principal):
        return problem(
            403,
            "GATEWAY_FORBIDDEN",
            "the gateway's management key lacks the 'verify' scope",
            {"X-Keyplane-Code": "GATEWAY_FORBIDDEN"},
        )
    return principal


def _may_verify(principal: Principal) -> bool:
    try:
        require_scope(principal, "verify")
    except PermissionDeniedError:
        return False
    return True


def _answer(decision: Decision, clock: Clock) -> Response:
    headers = http.response_headers(decision, clock.now())
    if decision.valid:
        return Response(status_code=200, headers=headers)
    return JSONResponse(
        http.problem_body(decision),
        status_code=http.status_for(decision.code),
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )
