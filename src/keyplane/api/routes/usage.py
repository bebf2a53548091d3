"""``/v1/usage``: usage reports that settle verifies, and ``/v1/events``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from keyplane.api.deps import EventsDep, PrincipalDep, UsageDep, UsageWriter
from keyplane.api.exact import ExactJsonRoute, credits
from keyplane.api.params import CursorParam, LimitParam, reject_unknown_params
from keyplane.api.schemas import RequestId, UsageRecorded, UsageReportIn
from keyplane.domain import money
from keyplane.services.usage import UsageReport

router = APIRouter(prefix="/v1", tags=["usage"], route_class=ExactJsonRoute)


@router.post(
    "/usage",
    status_code=201,
    response_model=UsageRecorded,
    responses={
        200: {
            "model": UsageRecorded,
            "description": "a repeated report (same idempotency key and body): "
            "the first one's entry, with duplicate: true",
        }
    },
)
async def report_usage(
    body: UsageReportIn,
    principal: UsageWriter,
    usage: UsageDep,
    response: Response,
    idempotency_key: Annotated[RequestId | None, Header()] = None,
) -> UsageRecorded:
    """Record what a request spent; answered only once the report is durable.

    ``Idempotency-Key`` (or, without it, ``request_id``) makes retries safe: a repeat with the
    same body answers 200 with ``duplicate: true`` and counts nothing; the same key with a
    different body is 409 ``IDEMPOTENCY_KEY_REUSED``. The scope is the API key reported for:
    other keys' reports never collide with it.
    """
    recorded, key_id = await usage.report(
        principal,
        UsageReport(
            key_id=body.key_id,
            key=body.key,
            request_id=body.request_id,
            cost=money.to_micros(body.cost),
            input_tokens=body.input_tokens,
            output_tokens=body.output_tokens,
            model=body.model,
            latency_ms=body.latency_ms,
            status=body.status,
            feature=body.feature,
        ),
        idempotency_key,
    )
    if not recorded.new:
        response.status_code = 200
    return UsageRecorded(
        id=recorded.event_id,
        key_id=key_id,
        duplicate=not recorded.new,
        recorded_at=recorded.recorded_at,
    )


@router.get("/events")
async def list_events(
    request: Request,
    principal: PrincipalDep,
    events: EventsDep,
    key_id: Annotated[str | None, Query(pattern=r"^key_[0-9a-z]{26}$")] = None,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> dict[str, Any]:
    """Events in the order they happened (``budget.threshold_crossed``, ...)."""
    reject_unknown_params(request, {"key_id", "cursor", "limit"})
    rows = await events.list(principal, key_id, cursor, limit + 1)
    page = rows[:limit]
    return {
        "data": [
            {
                "id": row["id"],
                "type": row["type"],
                "subject_id": row["subject_id"],
                "payload": _payload(row["payload"]),
                "created_at": row["created_at"],
            }
            for row in page
        ],
        "next_cursor": page[-1]["id"] if len(rows) > limit and page else None,
        "has_more": len(rows) > limit,
    }


def _payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Amounts are stored as micro-credits and shown as credits, like everywhere else."""
    shown = {}
    for name, value in payload.items():
        if name.endswith("_micros") and isinstance(value, int):
            shown[name.removesuffix("_micros")] = credits(value)
        else:
            shown[name] = value
    return shown
