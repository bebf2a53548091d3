"""FastAPI dependencies: the runtime and the authenticated management principal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from keyplane.domain.tenancy import Principal
from keyplane.services.authz import require_scope
from keyplane.services.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: a sync dependency is run in a thread pool on every request.
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_principal(
    request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else None
    return await runtime.management.authenticate(presented)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def scoped(scope: str) -> Any:
    """A dependency giving the authenticated principal, refused (403) unless it holds ``scope``.

    Why a dependency and not only the services' own checks: FastAPI resolves a route's
    dependencies before it validates the request body, so a key without the scope is turned
    away before any field of the body is parsed. Parsing is bounded anyway (``domain.money``),
    but a key that may only ``verify`` has no business making the server read a policy or an
    amount. Every route with a body takes its principal from here
    (``tests/api/test_scope_first.py`` walks the routes to keep it so); the services still
    check, for callers that do not come through HTTP.
    """

    async def principal_with_scope(principal: PrincipalDep) -> Principal:
        require_scope(principal, scope)
        return principal

    principal_with_scope.required_scope = scope  # type: ignore[attr-defined]
    return Depends(principal_with_scope)


# The scoped principals routes with a body take (one per scope such a route needs).
KeysWriter = Annotated[Principal, scoped("keys:write")]
PlansWriter = Annotated[Principal, scoped("plans:write")]
ProjectsWriter = Annotated[Principal, scoped("projects:write")]
ManagementKeysWriter = Annotated[Principal, scoped("management_keys:write")]
UsageWriter = Annotated[Principal, scoped("usage:write")]
Verifier = Annotated[Principal, scoped("verify")]
VaultWriter = Annotated[Principal, scoped("vault:write")]
VaultLeaser = Annotated[Principal, scoped("vault:lease")]
