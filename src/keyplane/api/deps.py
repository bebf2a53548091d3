"""FastAPI dependencies: the runtime and the authenticated management principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyplane.domain.tenancy import Principal
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
