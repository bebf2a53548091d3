"""Leak response: GitHub secret scanning, operator reports, and each project's action."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from keyplane.api.deps import LeakReporter, LeaksDep, PrincipalDep, ProjectsWriter
from keyplane.api.leak_schemas import (
    REPORT_BODY,
    LabelOut,
    LabelsEnvelope,
    LeakResponseEnvelope,
    LeakResponseIn,
    LeakResponseOut,
)
from keyplane.api.params import check_id
from keyplane.domain.leaks import LeakAction

router = APIRouter(tags=["leaks"])


@router.post(
    "/v1/secret-scanning/github",
    response_model=list[LabelOut],
    openapi_extra={"requestBody": REPORT_BODY},
)
async def github_secret_scanning(
    request: Request,
    leaks: LeaksDep,
    github_public_key_identifier: Annotated[str | None, Header()] = None,
    github_public_key_signature: Annotated[str | None, Header()] = None,
) -> list[LabelOut]:
    """GitHub secret scanning partner endpoint; the ECDSA signature is the credential."""
    body = await request.body()
    labels = await leaks.github_report(
        github_public_key_identifier, github_public_key_signature, body
    )
    return [LabelOut.of(label) for label in labels]


@router.post(
    "/v1/leaked-keys", response_model=LabelsEnvelope, openapi_extra={"requestBody": REPORT_BODY}
)
async def report_leaked_keys(
    request: Request, principal: LeakReporter, leaks: LeaksDep
) -> LabelsEnvelope:
    """Report keys found leaked; each is labelled and its project's action applied."""
    labels = await leaks.operator_report(principal, await request.body())
    return LabelsEnvelope(data=[LabelOut.of(label) for label in labels])


def _project_id(project_id: str) -> str:
    return check_id(project_id, "proj", "project")


@router.get("/v1/projects/{project_id}/leak-response", response_model=LeakResponseEnvelope)
async def get_leak_response(
    project_id: str, principal: PrincipalDep, leaks: LeaksDep
) -> LeakResponseEnvelope:
    """The project's action for a key reported leaked."""
    action = await leaks.action_for(principal, _project_id(project_id))
    return LeakResponseEnvelope(data=LeakResponseOut.of(project_id, action))


@router.put("/v1/projects/{project_id}/leak-response", response_model=LeakResponseEnvelope)
async def set_leak_response(
    project_id: str, body: LeakResponseIn, principal: ProjectsWriter, leaks: LeaksDep
) -> LeakResponseEnvelope:
    """Set the project's action for a key reported leaked."""
    action = await leaks.set_action(principal, _project_id(project_id), LeakAction(body.action))
    return LeakResponseEnvelope(data=LeakResponseOut.of(project_id, action))
