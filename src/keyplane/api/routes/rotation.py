"""Rotation policies of keys, claims of held rotation secrets, and the scheduled jobs."""

from __future__ import annotations

from fastapi import APIRouter, Request

from keyplane.api.deps import (
    ClockDep,
    JobsDep,
    KeysWriter,
    PlansWriter,
    PrincipalDep,
    RotationsDep,
    origin_of,
)
from keyplane.api.exact import ExactJsonRoute
from keyplane.api.params import check_key_ref, reject_unknown_params
from keyplane.api.rotation_schemas import (
    ClaimedOut,
    JobList,
    JobOut,
    PlanRotationEnvelope,
    PlanRotationOut,
    RotationEnvelope,
    RotationIn,
    RotationOut,
)
from keyplane.api.schemas import PlanRef
from keyplane.errors import AuthenticationError, NotFoundError

router = APIRouter(prefix="/v1", tags=["keys"])
self_router = APIRouter(prefix="/v1/self", tags=["self"])
jobs_router = APIRouter(prefix="/v1", tags=["jobs"])
plans_router = APIRouter(prefix="/v1/plans", tags=["plans"], route_class=ExactJsonRoute)


@router.post("/keys/{id_or_hash}/rotation", response_model=RotationEnvelope)
async def set_key_rotation(
    id_or_hash: str, body: RotationIn, principal: KeysWriter, rotations: RotationsDep
) -> RotationEnvelope:
    """Set the key's automatic rotation policy (a cron schedule or a maximum age)."""
    schedule = await rotations.set_policy(
        principal, check_key_ref(id_or_hash), body.model_dump(mode="json")
    )
    return RotationEnvelope(data=RotationOut.of(schedule, None))


@router.get("/keys/{id_or_hash}/rotation", response_model=RotationEnvelope)
async def get_key_rotation(
    id_or_hash: str, request: Request, principal: PrincipalDep, rotations: RotationsDep
) -> RotationEnvelope:
    """The key's rotation policy, next due time and pending held secret (never the secret)."""
    reject_unknown_params(request, set())
    key_ref = check_key_ref(id_or_hash)
    schedule = await rotations.get_policy(principal, key_ref)
    if schedule is None:
        raise NotFoundError("this key has no rotation policy", code="ROTATION_POLICY_NOT_FOUND")
    held = await rotations.held(principal, key_ref)
    return RotationEnvelope(data=RotationOut.of(schedule, held))


@router.post("/keys/{id_or_hash}/rotation/claim", response_model=ClaimedOut)
async def claim_key_rotation(
    id_or_hash: str, principal: KeysWriter, rotations: RotationsDep
) -> ClaimedOut:
    """Take the new secret an automatic rotation held; it is erased on the server, once."""
    claimed = await rotations.claim(principal, check_key_ref(id_or_hash))
    return ClaimedOut(
        key=claimed.secret, key_id=claimed.record.id, old_key_expires_at=claimed.old_key_expires_at
    )


@self_router.post("/rotation/claim", response_model=ClaimedOut)
async def claim_own_rotation(request: Request, rotations: RotationsDep) -> ClaimedOut:
    """With the OLD key as bearer, during its grace period: the new secret, once."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise AuthenticationError("present the old API key as Authorization: Bearer <key>")
    claimed = await rotations.claim_with_old_key(token, origin_of(request))
    return ClaimedOut(
        key=claimed.secret, key_id=claimed.record.id, old_key_expires_at=claimed.old_key_expires_at
    )


@jobs_router.get("/jobs", response_model=JobList)
async def list_jobs(
    request: Request, principal: PrincipalDep, jobs: JobsDep, clock: ClockDep
) -> JobList:
    """The scheduled jobs: schedule, next and last run, last outcome, attempts."""
    reject_unknown_params(request, set())
    now = clock.now()
    return JobList(data=[JobOut.of(job, now) for job in await jobs.list_jobs(principal)])


@plans_router.post("/{plan}/rotation", response_model=PlanRotationEnvelope)
async def set_plan_rotation(
    plan: PlanRef, body: RotationIn, principal: PlansWriter, rotations: RotationsDep
) -> PlanRotationEnvelope:
    """Set the plan's rotation policy: every key on it without a policy of its own follows it,
    including keys created on or moved onto the plan later."""
    rotation = await rotations.set_plan_policy(principal, plan, body.model_dump(mode="json"))
    return PlanRotationEnvelope(data=PlanRotationOut.of(rotation))


@plans_router.get("/{plan}/rotation", response_model=PlanRotationEnvelope)
async def get_plan_rotation(
    plan: PlanRef, request: Request, principal: PrincipalDep, rotations: RotationsDep
) -> PlanRotationEnvelope:
    """The plan's rotation policy."""
    reject_unknown_params(request, set())
    rotation = await rotations.get_plan_policy(principal, plan)
    if rotation is None:
        raise NotFoundError("this plan has no rotation policy", code="ROTATION_POLICY_NOT_FOUND")
    return PlanRotationEnvelope(data=PlanRotationOut.of(rotation))
