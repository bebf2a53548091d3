"""Reading and exporting the audit log, within the caller's reach (scope ``audit:read``).

A project-bound caller sees its project's entries only; an organization-wide caller sees the
organization's. Every filter is checked and bounded here, before any query, so the API, the
CLI and in-process callers get the same refusals (``ValidationError``, code
``INVALID_FILTER``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from keyplane.domain import audit_view
from keyplane.domain.clock import Clock
from keyplane.domain.tenancy import Principal
from keyplane.errors import NotFoundError, ValidationError
from keyplane.services.audit_export import EXTENSIONS, FORMATS, MEDIA_TYPES, exported, writer_for
from keyplane.services.authz import require_scope
from keyplane.store.audit_query import AuditFilter, AuditQueryStore
from keyplane.store.keys import KeyStore

SCOPE = "audit:read"
#: Entries read per page while exporting (and per Parquet row group).
EXPORT_PAGE = 5000


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """What to read; empty tuples and None filter nothing.

    ``key_ids`` match the entry's target (any object id), ``actors`` its actor id
    (``system`` for jobs, ``root`` for the root key), ``event_types`` its action (exact names
    or ``prefix.*``). ``start <= occurred_at < end``.
    """

    key_ids: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    #: More event types (the API's ``action`` parameter), bounded on their own.
    actions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Entries newest first, and the cursor of the next page (None on the last one)."""

    entries: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AuditExport:
    """A checked export, ready to stream: ``chunks()`` yields the file's bytes."""

    format: str
    media_type: str
    filename: str
    chunks: AsyncIterator[bytes]


class AuditReader:
    """The audit log as its readers see it."""

    def __init__(self, store: AuditQueryStore, keys: KeyStore, clock: Clock) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock

    async def list(
        self, principal: Principal, query: AuditQuery, cursor: str | None, limit: int
    ) -> AuditPage:
        """Up to ``limit`` matching entries, newest first, after ``cursor``."""
        require_scope(principal, SCOPE)
        where = _filter(principal, query)
        before = _cursor(cursor)
        limit = max(1, min(limit, audit_view.MAX_PAGE))
        rows = await self._store.page(where, before, limit + 1)
        page = rows[:limit]
        more = len(rows) > limit and bool(page)
        return AuditPage(page, audit_view.encode_cursor(page[-1]["seq"]) if more else None)

    async def get(self, principal: Principal, entry_id: str) -> dict[str, Any]:
        """One entry by id; NotFoundError when it is not in the caller's reach."""
        require_scope(principal, SCOPE)
        try:
            audit_view.check_ids([entry_id], "entry id")
        except ValueError:
            raise NotFoundError("no such audit entry", code="AUDIT_ENTRY_NOT_FOUND") from None
        row = await self._store.get(principal.org_id, entry_id)
        if row is None or (
            principal.project_id is not None and row["project_id"] != principal.project_id
        ):
            raise NotFoundError("no such audit entry", code="AUDIT_ENTRY_NOT_FOUND")
        return row

    async def for_key(
        self, principal: Principal, key_id: str, query: AuditQuery, cursor: str | None, limit: int
    ) -> AuditPage:
        """The entries about one key (seed 004's per-key audit), newest first."""
        require_scope(principal, SCOPE)
        record = await self._keys.get(principal.org_id, key_id)
        if (
            record is None
            or record.id != key_id
            or not principal.reaches_project(record.project_id)
        ):
            raise NotFoundError(f"no key {key_id!r}", code="KEY_NOT_FOUND")
        return await self.list(principal, _with_key(query, key_id), cursor, limit)

    async def export(
        self,
        principal: Principal,
        query: AuditQuery,
        fmt: str,
        *,
        include_pii: bool = False,
        period: str | None = None,
    ) -> AuditExport:
        """Check an export and return it ready to stream, oldest entry first.

        Every refusal (scope, filters, format, a Parquet export without pyarrow) happens here,
        before the first byte. The entries are those up to the organization's head at this
        moment: what is appended while the file streams belongs to the next export. Memory
        stays bounded by :data:`EXPORT_PAGE` entries whatever the export's size.
        """
        require_scope(principal, SCOPE)
        if fmt not in FORMATS:
            raise ValidationError("format is one of " + ", ".join(FORMATS), code="INVALID_FILTER")
        if period is not None:
            if query.start is not None or query.end is not None:
                raise ValidationError(
                    "give either a period or start/end, not both", code="INVALID_PERIOD"
                )
            try:
                start, end = audit_view.period(period, self._clock.now())
            except ValueError as exc:
                raise ValidationError(str(exc), code="INVALID_FILTER") from None
            query = replace(query, start=start, end=end)
        where = _filter(principal, query)
        writer = writer_for(fmt)  # raises ExportUnavailableError before anything streams
        head = await self._store.head_seq(principal.org_id)
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%SZ")

        async def chunks() -> AsyncIterator[bytes]:
            after = 0
            while True:
                rows = await self._store.scan(where, after, head, EXPORT_PAGE)
                if rows:
                    data = writer.write([exported(row, include_pii) for row in rows])
                    if data:
                        yield data
                    after = rows[-1]["seq"]
                if len(rows) < EXPORT_PAGE:
                    break
            tail = writer.finish()
            if tail:
                yield tail

        return AuditExport(fmt, MEDIA_TYPES[fmt], f"audit-{stamp}.{EXTENSIONS[fmt]}", chunks())


def _with_key(query: AuditQuery, key_id: str) -> AuditQuery:
    return replace(query, key_ids=(key_id,))


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return audit_view.decode_cursor(cursor)
    except ValueError as exc:
        raise ValidationError(f"cursor: {exc}", code="INVALID_CURSOR") from None


def _filter(principal: Principal, query: AuditQuery) -> AuditFilter:
    """The store filter for ``query`` in the caller's reach; ValidationError on a bad one."""
    try:
        audit_view.check_ids(query.key_ids, "key_id")
        audit_view.check_ids(query.actors, "actor", system=True)
        audit_view.check_outcomes(query.outcomes)
        if len(query.outcomes) > len(audit_view.OUTCOMES):
            raise ValueError("too many outcomes")
        if len(query.actions) > audit_view.MAX_FILTER_VALUES:
            raise ValueError(f"at most {audit_view.MAX_FILTER_VALUES} actions")
        actions = audit_view.action_filter(
            query.event_types + query.actions, limit=2 * audit_view.MAX_FILTER_VALUES
        )
        if len(query.event_types) > audit_view.MAX_FILTER_VALUES:
            raise ValueError(f"at most {audit_view.MAX_FILTER_VALUES} event types")
    except ValueError as exc:
        raise ValidationError(str(exc), code="INVALID_FILTER") from None
    start = None if query.start is None else audit_view.start_of(query.start)
    end = None if query.end is None else audit_view.end_of(query.end)
    if start is not None and end is not None and start >= end:
        raise ValidationError("start must be before end", code="INVALID_PERIOD")
    return AuditFilter(
        org_id=principal.org_id,
        project_id=principal.project_id,
        target_ids=tuple(dict.fromkeys(query.key_ids)),
        actor_ids=tuple(dict.fromkeys(query.actors)),
        actions=actions.names,
        action_prefixes=actions.prefixes,
        outcomes=tuple(dict.fromkeys(query.outcomes)),
        start=start,
        end=end,
    )
