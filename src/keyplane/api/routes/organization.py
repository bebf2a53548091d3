"""``/v1/organization/aliases``: external ids that name the caller's organization.

FastRouter's ``org_id`` (``/prod``) may then be the organization's id there, as its clients
send it; any other value is still ``403 ORG_MISMATCH``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel

from keyplane.api.deps import PrincipalDep, ProjectsDep
from keyplane.services.projects import ALIAS_PATTERN

router = APIRouter(prefix="/v1/organization", tags=["organization"])

AliasPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=f"^{ALIAS_PATTERN.pattern}$",
        description="An external id: letters, digits and . _ : @ -",
    ),
]


class Aliases(BaseModel):
    org_id: str
    aliases: list[str]


class AliasesEnvelope(BaseModel):
    data: Aliases


@router.get("/aliases", response_model=AliasesEnvelope)
async def list_aliases(principal: PrincipalDep, projects: ProjectsDep) -> AliasesEnvelope:
    """List the external ids that name this organization."""
    names = await projects.aliases(principal)
    return AliasesEnvelope(data=Aliases(org_id=principal.org_id, aliases=names))


@router.put("/aliases/{alias}", response_model=AliasesEnvelope)
async def add_alias(
    alias: AliasPath, principal: PrincipalDep, projects: ProjectsDep
) -> AliasesEnvelope:
    """Let an external id name this organization (idempotent)."""
    names = await projects.add_alias(principal, alias)
    return AliasesEnvelope(data=Aliases(org_id=principal.org_id, aliases=names))


@router.delete("/aliases/{alias}", status_code=204)
async def remove_alias(
    alias: AliasPath, principal: PrincipalDep, projects: ProjectsDep
) -> Response:
    """Stop an external id from naming this organization."""
    await projects.remove_alias(principal, alias)
    return Response(status_code=204)
