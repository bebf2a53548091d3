"""``/v1/audit``: reading and exporting the audit log; ``/v1/keys/{id}/audit`` (seed 004)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field, StringConstraints

from keyplane.api.deps import AuditExporter, AuditReadDep, PrincipalDep
from keyplane.api.fields import Input
from keyplane.api.params import CursorParam, check_id, reject_unknown_params
from keyplane.domain import audit_view
from keyplane.domain.tenancy import Principal
from keyplane.errors import ValidationError
from keyplane.services.audit_read import AuditPage, AuditQuery, AuditReader

router = APIRouter(prefix="/v1", tags=["audit"])

#: What the service accepts, stated in the OpenAPI document too (the service stays the enforcer).
ID_PATTERN = r"^[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26}$"
ACTOR_PATTERN = r"^(?:system|root|[a-z]{2,8}_[0-9a-hjkmnp-tv-z]{26})$"
_NAME = r"[a-z][a-z0-9_]{0,31}"
#: Every action has a dot (``key.revoked``), so a bare word is no filter: ``false`` or ``key``
#: is refused rather than matching nothing (a prefix is written ``key.*``).
EVENT_TYPE_PATTERN = rf"^(?:\*|{_NAME}(?:\.{_NAME}){{1,3}}|{_NAME}(?:\.{_NAME}){{0,2}}\.\*)$"
#: A date, or a time with an optional offset (UTC without one). The calendar itself (a 30th of
#: February) is beyond a pattern: such a value is a 422 INVALID_TIME.
TIME_PATTERN = (
    r"^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)?)?$"
)
Outcome = Literal["success", "failure", "denied"]


IdText = Annotated[str, StringConstraints(max_length=40, pattern=ID_PATTERN)]
ActorText = Annotated[str, StringConstraints(max_length=40, pattern=ACTOR_PATTERN)]
EventTypeText = Annotated[str, StringConstraints(max_length=100, pattern=EVENT_TYPE_PATTERN)]
_MAX = audit_view.MAX_FILTER_VALUES
KeyIds = Annotated[
    list[IdText] | None,
    Query(max_length=_MAX, description="the entry's target: any object id (repeatable)"),
]
Actors = Annotated[
    list[ActorText] | None,
    Query(max_length=_MAX, description="a management key id, root or system (repeatable)"),
]
EventTypes = Annotated[
    list[EventTypeText] | None,
    Query(max_length=_MAX, description="an action, or a prefix such as key.* (repeatable)"),
]
Outcomes = Annotated[list[Outcome] | None, Query(max_length=3)]
Bound = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=TIME_PATTERN,
        description="ISO 8601 time (UTC when no offset is given) or a date; "
        "a date as `end` includes that whole day",
    ),
]
PageLimit = Annotated[int, Query(ge=1, le=audit_view.MAX_PAGE)]
_FILTERS = {"key_id", "actor", "action", "event_types", "outcome", "start", "end"}


def _bound(name: str, value: str | None) -> date | None:
    """A time or a date; ValidationError (422) on anything else."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{name}: an ISO 8601 time such as 2026-01-31T00:00:00Z, or a date such as 2026-01-31",
            code="INVALID_TIME",
        ) from None


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "seq": row["seq"],
        "occurred_at": row["occurred_at"],
        "org_id": row["org_id"],
        "project_id": row["project_id"],
        "actor": {
            "type": row["actor_type"],
            "id": row["actor_id"],
            "name": row["actor_name"],
            "ip": row["actor_ip"],
            "user_agent": row["actor_user_agent"],
        },
        "request_id": row["request_id"],
        "action": row["action"],
        "target": {"type": row["target_type"], "id": row["target_id"]},
        "outcome": row["outcome"],
        "count": row["count"],
        "details": row["details"],
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }


def _page(page: AuditPage) -> dict[str, Any]:
    return {
        "data": [_entry(row) for row in page.entries],
        "next_cursor": page.next_cursor,
        "has_more": page.next_cursor is not None,
    }


@router.get("/audit")
async def list_audit(
    request: Request,
    principal: PrincipalDep,
    audit: AuditReadDep,
    key_id: KeyIds = None,
    actor: Actors = None,
    action: EventTypes = None,
    event_types: EventTypes = None,
    outcome: Outcomes = None,
    start: Bound = None,
    end: Bound = None,
    cursor: CursorParam = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    """Audit log entries, newest first (scope ``audit:read``)."""
    reject_unknown_params(request, _FILTERS | {"cursor", "limit"})
    query = AuditQuery(
        key_ids=tuple(key_id or ()),
        actors=tuple(actor or ()),
        actions=tuple(action or ()),
        event_types=tuple(event_types or ()),
        outcomes=tuple(outcome or ()),
        start=_bound("start", start),
        end=_bound("end", end),
    )
    return _page(await audit.list(principal, query, cursor, limit))


@router.get("/audit/entries/{entry_id}")
async def get_audit_entry(
    entry_id: str, principal: PrincipalDep, audit: AuditReadDep
) -> dict[str, Any]:
    """One audit log entry (scope ``audit:read``)."""
    return {"data": _entry(await audit.get(principal, entry_id))}


@router.get("/keys/{id_or_hash}/audit")
async def key_audit(
    id_or_hash: str,
    request: Request,
    principal: PrincipalDep,
    audit: AuditReadDep,
    event_types: EventTypes = None,
    start: Bound = None,
    end: Bound = None,
    start_date: Bound = None,
    end_date: Bound = None,
    cursor: CursorParam = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    """The audit events of one key, newest first, in seed 004's shape (``audit:read``)."""
    reject_unknown_params(
        request, {"event_types", "start", "end", "start_date", "end_date", "cursor", "limit"}
    )
    key_id = check_id(id_or_hash, "key", "key")
    query = AuditQuery(
        event_types=tuple(event_types or ()),
        start=_bound("start", _either("start", start, start_date)),
        end=_bound("end", _either("end", end, end_date)),
    )
    page = await audit.for_key(principal, key_id, query, cursor, limit)
    return {
        "key_id": key_id,
        "events": [
            {
                "id": row["id"],
                "timestamp": row["occurred_at"],
                "event_type": row["action"],
                "user_id": row["actor_id"],
                "user_name": row["actor_name"],
                "ip_address": row["actor_ip"],
                "user_agent": row["actor_user_agent"],
                "outcome": row["outcome"],
                "count": row["count"],
                "details": row["details"],
            }
            for row in page.entries
        ],
        "next_cursor": page.next_cursor,
        "has_more": page.next_cursor is not None,
    }


def _either(name: str, value: str | None, seed_alias: str | None) -> str | None:
    if value is not None and seed_alias is not None:
        raise ValidationError(f"give {name} or {name}_date, not both", code="INVALID_PERIOD")
    return value if value is not None else seed_alias


BodyKeyIds = Annotated[tuple[IdText, ...], Field(max_length=_MAX)]
BodyActors = Annotated[tuple[ActorText, ...], Field(max_length=_MAX)]
BodyEventTypes = Annotated[tuple[EventTypeText, ...], Field(max_length=_MAX)]
BodyOutcomes = Annotated[tuple[Outcome, ...], Field(max_length=3)]
BoundText = Annotated[str, StringConstraints(max_length=40, pattern=TIME_PATTERN)]


class AuditExportIn(Input):
    """What to export: a format, a period (a preset or start/end) and the list's filters."""

    format: Literal["csv", "json", "parquet"] = Field(
        description="`csv`, `json` (NDJSON, one entry a line) or `parquet`"
    )
    period: Literal[audit_view.PERIODS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="a preset instead of start/end: " + ", ".join(audit_view.PERIODS),
    )
    start: BoundText | None = None
    end: BoundText | None = None
    key_id: BodyKeyIds = ()
    actor: BodyActors = ()
    event_types: BodyEventTypes = ()
    outcome: BodyOutcomes = ()
    include_pii: bool = Field(
        default=False,
        description="false (the default) masks IP addresses to their network and drops user agents",
    )


class KeyAuditExportIn(Input):
    """Seed 004's per-key export: a format, a period, ``include_pii``."""

    format: Literal["csv", "json", "parquet"]
    period: Literal[audit_view.PERIODS] | None = None  # type: ignore[valid-type]
    start: BoundText | None = None
    end: BoundText | None = None
    event_types: BodyEventTypes = ()
    include_pii: bool = False


_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file, streamed",
        "content": {
            "text/csv": {},
            "application/x-ndjson": {},
            "application/vnd.apache.parquet": {},
        },
    },
    501: {"description": "Parquet asked for, and the server lacks pyarrow"},
}


@router.post("/audit/export", response_class=StreamingResponse, responses=_EXPORT_RESPONSES)
async def export_audit(
    body: AuditExportIn, principal: AuditExporter, audit: AuditReadDep
) -> StreamingResponse:
    """Export the audit log as CSV, NDJSON or Parquet, streamed oldest entry first."""
    query = AuditQuery(
        key_ids=tuple(body.key_id),
        actors=tuple(body.actor),
        event_types=tuple(body.event_types),
        outcomes=tuple(body.outcome),
        start=_bound("start", body.start),
        end=_bound("end", body.end),
    )
    return await _stream(audit, principal, query, body.format, body.include_pii, body.period)


@router.post(
    "/keys/{id_or_hash}/audit/export",
    response_class=StreamingResponse,
    responses=_EXPORT_RESPONSES,
)
async def export_key_audit(
    id_or_hash: str, body: KeyAuditExportIn, principal: AuditExporter, audit: AuditReadDep
) -> StreamingResponse:
    """Export one key's audit events (seed 004), streamed oldest entry first."""
    key_id = check_id(id_or_hash, "key", "key")
    await audit.for_key(principal, key_id, AuditQuery(), None, 1)  # 404 unless reachable
    query = AuditQuery(
        key_ids=(key_id,),
        event_types=tuple(body.event_types),
        start=_bound("start", body.start),
        end=_bound("end", body.end),
    )
    return await _stream(audit, principal, query, body.format, body.include_pii, body.period)


async def _stream(
    audit: AuditReader,
    principal: Principal,
    query: AuditQuery,
    fmt: str,
    include_pii: bool,
    period: str | None,
) -> StreamingResponse:
    export = await audit.export(principal, query, fmt, include_pii=include_pii, period=period)
    return StreamingResponse(
        export.chunks,
        media_type=export.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename}"',
            "Cache-Control": "no-store",
        },
    )
