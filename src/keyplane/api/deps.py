"""FastAPI dependencies: one narrow service each, and the authenticated management principal.

Routes take the use case they call (``KeyServiceDep``, ``VerifierDep``, ...), never the whole
runtime; each service checks its caller's scope and tenancy itself.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.requests import HTTPConnection
from starlette.types import Scope

from keyplane.api.observe import note_principal, request_id_of
from keyplane.domain.changes import Origin
from keyplane.domain.clock import Clock
from keyplane.domain.forwarding import client_address
from keyplane.domain.tenancy import Principal
from keyplane.services import verify
from keyplane.services.analytics import Analytics
from keyplane.services.audit import AuditService
from keyplane.services.audit_read import AuditReader
from keyplane.services.authz import require_scope
from keyplane.services.events import Events
from keyplane.services.instances import Confirmation
from keyplane.services.jobs import JobRunner
from keyplane.services.key_limits import KeyLimits
from keyplane.services.keys import KeyService
from keyplane.services.leaks import LeakResponse
from keyplane.services.management import ManagementKeys
from keyplane.services.plans import Plans
from keyplane.services.projects import Projects
from keyplane.services.rotation import Rotations
from keyplane.services.runtime import Runtime, Services
from keyplane.services.security_reports import SecurityReports
from keyplane.services.signing_secrets import SigningSecrets
from keyplane.services.usage import UsageService
from keyplane.services.usage_stream import UsageStreams
from keyplane.services.vault import VaultService
from keyplane.services.webhooks import WebhookService
from keyplane.settings import Settings

#: Evict a just-written record on every live instance and say which confirmed
#: (``Runtime.confirm_eviction``): cache, record id, hashes, timeout in seconds.
ConfirmEviction = Callable[[str, str, tuple[str, ...], float], Awaitable[Confirmation]]


# async on purpose, all of them: a sync dependency is run in a thread pool on every request.
async def get_runtime(request: Request) -> Runtime:
    """The whole runtime: for the operations routes (readiness, metrics) only."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def services_of(request: HTTPConnection) -> Services:
    """The runtime's services (the data plane reads them here, without a dependency)."""
    services: Services = request.app.state.runtime.services
    return services


async def get_keys(request: Request) -> KeyService:
    return services_of(request).keys


async def get_verifier(request: Request) -> verify.Verifier:
    return services_of(request).verifier


async def get_management(request: Request) -> ManagementKeys:
    return services_of(request).management


async def get_projects(request: Request) -> Projects:
    return services_of(request).projects


async def get_plans(request: Request) -> Plans:
    return services_of(request).plans


async def get_usage(request: Request) -> UsageService:
    return services_of(request).usage


async def get_key_limits(request: Request) -> KeyLimits:
    return services_of(request).key_limits


async def get_analytics(request: Request) -> Analytics:
    return services_of(request).analytics


async def get_events(request: Request) -> Events:
    return services_of(request).events


async def get_audit(request: Request) -> AuditService:
    return services_of(request).audit


async def get_vault(request: Request) -> VaultService:
    return services_of(request).vault


async def get_streams(request: HTTPConnection) -> UsageStreams:
    # HTTPConnection: the usage stream is served over WebSocket too.
    streams: UsageStreams = request.app.state.runtime.services.streams
    return streams


async def get_webhooks(request: Request) -> WebhookService:
    return services_of(request).webhooks


async def get_audit_read(request: Request) -> AuditReader:
    return services_of(request).audit_read


async def get_signing_secrets(request: Request) -> SigningSecrets:
    return services_of(request).signing_secrets


async def get_rotations(request: Request) -> Rotations:
    return services_of(request).rotations


async def get_jobs(request: Request) -> JobRunner:
    return services_of(request).jobs


async def get_security_reports(request: Request) -> SecurityReports:
    return services_of(request).security_reports


async def get_leaks(request: Request) -> LeakResponse:
    return services_of(request).leaks


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.runtime.clock
    return clock


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.runtime.settings
    return settings


async def get_confirm_eviction(request: Request) -> ConfirmEviction:
    runtime: Runtime = request.app.state.runtime
    return runtime.confirm_eviction


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
KeyServiceDep = Annotated[KeyService, Depends(get_keys)]
KeyLimitsDep = Annotated[KeyLimits, Depends(get_key_limits)]
VerifierDep = Annotated[verify.Verifier, Depends(get_verifier)]
ManagementDep = Annotated[ManagementKeys, Depends(get_management)]
ProjectsDep = Annotated[Projects, Depends(get_projects)]
PlansDep = Annotated[Plans, Depends(get_plans)]
UsageDep = Annotated[UsageService, Depends(get_usage)]
EventsDep = Annotated[Events, Depends(get_events)]
AnalyticsDep = Annotated[Analytics, Depends(get_analytics)]
VaultDep = Annotated[VaultService, Depends(get_vault)]
StreamsDep = Annotated[UsageStreams, Depends(get_streams)]
SigningSecretsDep = Annotated[SigningSecrets, Depends(get_signing_secrets)]
SecurityReportsDep = Annotated[SecurityReports, Depends(get_security_reports)]
LeaksDep = Annotated[LeakResponse, Depends(get_leaks)]
WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]
AuditReadDep = Annotated[AuditReader, Depends(get_audit_read)]
AuditDep = Annotated[AuditService, Depends(get_audit)]
RotationsDep = Annotated[Rotations, Depends(get_rotations)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ConfirmDep = Annotated[ConfirmEviction, Depends(get_confirm_eviction)]


async def get_principal(request: HTTPConnection) -> Principal:
    # The management service read here, not through a dependency: every management route
    # resolves this one, and each dependency costs tens of microseconds.
    authorization, forwarded_for, real_ip, user_agent = _principal_headers(request.scope)
    return await principal_of(request, authorization, forwarded_for, real_ip, user_agent)


async def principal_of(
    request: HTTPConnection,
    header: str | None,
    forwarded_for: str | None,
    real_ip: str | None,
    user_agent: str | None,
    runtime: Runtime | None = None,
) -> Principal:
    """:func:`get_principal`, given the request's ``Authorization``, ``X-Forwarded-For``,
    ``X-Real-IP`` and ``User-Agent`` (the data plane reads them with the rest of the head),
    and the app's runtime when the caller has it at hand (the data plane: reading it from the
    app's state is a lookup through Starlette's ``State`` each time)."""
    if runtime is None:
        runtime = request.app.state.runtime
    scheme, _, token = (header or "").partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else None
    origin = _origin(request, forwarded_for, real_ip, user_agent, runtime.settings)
    principal = await runtime.services.management.authenticate(presented, origin)
    note_principal(request.scope, principal.key_id)
    # For the error handler (``request.state.principal``): a 403 this request ends in is
    # counted against this caller.
    request.scope.setdefault("state", {})["principal"] = principal
    return principal


#: The headers that name the caller and where it is, in the order _principal_headers gives.
_PRINCIPAL_HEADERS = {b"authorization": 0, b"x-forwarded-for": 1, b"x-real-ip": 2, b"user-agent": 3}


def _principal_headers(scope: Scope) -> list[str | None]:
    """``Authorization``, ``X-Forwarded-For``, ``X-Real-IP`` and ``User-Agent``, each the
    first of its name as ``request.headers.get`` gives it, found in one pass over the
    headers (every management request and every verify reads them)."""
    found: list[str | None] = [None, None, None, None]
    for name, value in scope["headers"]:
        slot = _PRINCIPAL_HEADERS.get(name)
        if slot is not None and found[slot] is None:
            found[slot] = value.decode("latin-1")
    return found


#: Gateways keep their connections and send the same forwarding headers: the address each
#: combination resolves to, remembered (``settings.trusted_networks`` is a tuple, hashable).
_client_address = functools.lru_cache(maxsize=4096)(client_address)


def origin_of(request: HTTPConnection) -> Origin:
    """Where a management request came from: the client address (through trusted proxies
    only), its user agent and request id, bounded; for the audit log."""
    headers = request.headers
    return _origin(
        request,
        headers.get("x-forwarded-for"),
        headers.get("x-real-ip"),
        headers.get("user-agent"),
        request.app.state.runtime.settings,
    )


def _origin(
    request: HTTPConnection,
    forwarded_for: str | None,
    real_ip: str | None,
    user_agent: str | None,
    settings: Settings,
) -> Origin:
    client = request.scope.get("client")
    ip = _client_address(
        client[0] if client else None, forwarded_for, real_ip, settings.trusted_networks
    )
    return Origin.of(ip, user_agent, request_id_of(request.scope))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def scoped(scope: str) -> Any:
    """A dependency giving the authenticated principal, refused (403) unless it holds ``scope``.

    Why a dependency and not only the services' own checks: FastAPI resolves a route's
    dependencies before it validates the request body, so a key without the scope is turned
    away before any field of the body is parsed. Parsing is bounded anyway (``domain.money``),
    but a key that may only ``verify`` has no business making the server read a policy or an
    amount. Every route with a body takes its principal from here
    (``tests/api/test_scope_first.py`` walks the routes to keep it so). This is an early
    refusal with the same function the services use (``services.authz.require_scope``); the
    service's own check stays the authoritative one.
    """

    async def principal_with_scope(principal: PrincipalDep) -> Principal:
        require_scope(principal, scope)
        return principal

    principal_with_scope.required_scope = scope  # type: ignore[attr-defined]
    return Depends(principal_with_scope)


# The scoped principals routes with a body take (one per scope such a route needs).
KeysWriter = Annotated[Principal, scoped("keys:write")]
CreditsWriter = Annotated[Principal, scoped("keys:credits")]
KeysApprover = Annotated[Principal, scoped("keys:approve")]
PlansWriter = Annotated[Principal, scoped("plans:write")]
ProjectsWriter = Annotated[Principal, scoped("projects:write")]
ManagementKeysWriter = Annotated[Principal, scoped("management_keys:write")]
UsageWriter = Annotated[Principal, scoped("usage:write")]
Verifier = Annotated[Principal, scoped("verify")]
VaultWriter = Annotated[Principal, scoped("vault:write")]
VaultLeaser = Annotated[Principal, scoped("vault:lease")]
SigningSecretsWriter = Annotated[Principal, scoped("signing_secrets:write")]
WebhooksWriter = Annotated[Principal, scoped("webhooks:write")]
AuditExporter = Annotated[Principal, scoped("audit:read")]
LeakReporter = Annotated[Principal, scoped("keys:leaked")]


@dataclass(frozen=True, slots=True)
class KeyRoutes:
    """What the key routes (native and compatible) use: the key service, the clock for
    rendering statuses, confirmed eviction for ``?wait=confirmed``, and the analytics for
    ``?include=usage``."""

    keys: KeyService
    clock: Clock
    confirm_eviction: ConfirmEviction
    analytics: Analytics


async def get_key_routes(
    keys: KeyServiceDep, clock: ClockDep, confirm: ConfirmDep, analytics: AnalyticsDep
) -> KeyRoutes:
    return KeyRoutes(keys, clock, confirm, analytics)


KeyRoutesDep = Annotated[KeyRoutes, Depends(get_key_routes)]


@dataclass(frozen=True, slots=True)
class Gateway:
    """What forward auth (``/v1/auth``) uses: the gateway key's authentication, the verifier,
    the settings naming the key header and trusted proxies, and the clock for headers."""

    management: ManagementKeys
    verifier: verify.Verifier
    settings: Settings
    clock: Clock


async def get_gateway(request: Request) -> Gateway:
    # One dependency, not four: forward auth is on the hot path, and each dependency FastAPI
    # resolves costs tens of microseconds.
    runtime: Runtime = request.app.state.runtime
    services = runtime.services
    return Gateway(services.management, services.verifier, runtime.settings, runtime.clock)


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
