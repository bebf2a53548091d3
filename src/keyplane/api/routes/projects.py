"""``/v1/projects``: groups of keys with their own key prefix."""

from __future__ import annotations

from fastapi import APIRouter

from keyplane.api.deps import PrincipalDep, ProjectsDep, ProjectsWriter
from keyplane.api.params import check_id
from keyplane.api.schemas import (
    Ack,
    AckEnvelope,
    ProjectCreate,
    ProjectEnvelope,
    ProjectList,
    ProjectOut,
)
from keyplane.services.authz import may_read

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.post("", status_code=201, response_model=ProjectEnvelope | AckEnvelope)
async def create_project(
    body: ProjectCreate, principal: ProjectsWriter, projects: ProjectsDep
) -> ProjectEnvelope | AckEnvelope:
    """Create a project; its keys start with ``key_prefix``."""
    project = await projects.create(principal, body.name, body.key_prefix)
    if not may_read(principal, "projects:read"):
        return AckEnvelope(data=Ack(id=project.id))
    return ProjectEnvelope(data=ProjectOut.of(project))


@router.get("", response_model=ProjectList)
async def list_projects(principal: PrincipalDep, projects: ProjectsDep) -> ProjectList:
    """List the projects this management key reaches."""
    return ProjectList(data=[ProjectOut.of(p) for p in await projects.list(principal)])


@router.get("/{project_id}", response_model=ProjectEnvelope)
async def get_project(
    project_id: str, principal: PrincipalDep, projects: ProjectsDep
) -> ProjectEnvelope:
    """Fetch one project."""
    project = await projects.get(principal, check_id(project_id, "proj", "project"))
    return ProjectEnvelope(data=ProjectOut.of(project))
