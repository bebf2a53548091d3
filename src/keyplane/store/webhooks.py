"""Webhook endpoints and the delivery outbox: :class:`WebhookStore` and its SQL implementation.

The outbox (:meth:`SqlWebhookStore.write_outbox`) is a journal writer: it runs inside the
transaction of every journalled change (``store/unit.py``) and adds one delivery row per
enabled endpoint that subscribes to the change's event, so an event exists if and only if its
change committed. Workers on any number of instances claim due rows with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite has one writer anyway) and push their
``next_attempt_at`` past a lease: a claimed row is invisible to other workers until the lease
runs out, so each delivery is sent once in normal operation, and again (same event id) only
when the worker that claimed it died before recording the outcome.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    String,
    and_,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from keyplane.domain import ids, webhook_events
from keyplane.domain.changes import Journal
from keyplane.domain.keys import KeyRecord, KeyStatus
from keyplane.domain.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    Attempt,
    Claimed,
    Delivery,
    Endpoint,
)
from keyplane.errors import NotFoundError
from keyplane.store.keys import key_from_row
from keyplane.store.tables import (
    api_keys,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_notices,
)
from keyplane.store.types import UTCDateTime
from keyplane.store.unit import UnitOfWork

#: Most attempts kept per delivery in the log (the row's counters keep counting).
MAX_LOGGED_ATTEMPTS = 100


class WebhookStore(Protocol):
    """Endpoints (per organization, optionally per project) and their deliveries."""

    async def create_endpoint(self, endpoint: Endpoint, journal: Journal) -> Endpoint:
        """Insert an endpoint (the journal's changes commit with it)."""
        ...

    async def get_endpoint(self, org_id: str, endpoint_id: str) -> Endpoint | None:
        """An endpoint of ``org_id`` (another org's is ``None``)."""
        ...

    async def list_endpoints(self, org_id: str) -> builtins.list[Endpoint]:
        """Every endpoint of ``org_id``, oldest first."""
        ...

    async def update_endpoint(
        self,
        org_id: str,
        endpoint_id: str,
        mutate: Callable[[Endpoint], Endpoint],
        journal: Journal,
    ) -> Endpoint:
        """Replace the endpoint with ``mutate(current)``, the row locked meanwhile;
        NotFoundError ``WEBHOOK_NOT_FOUND`` when it is not in ``org_id``."""
        ...

    async def delete_endpoint(self, org_id: str, endpoint_id: str, journal: Journal) -> Endpoint:
        """Delete an endpoint and its deliveries; NotFoundError when not in ``org_id``."""
        ...

    async def enqueue(self, endpoint: Endpoint, event_type: str, payload: str, at: datetime) -> str:
        """One delivery of a new event to one endpoint (a ping); the delivery id."""
        ...

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> builtins.list[Claimed]:
        """Up to ``limit`` pending deliveries due at ``now`` to enabled endpoints, each
        hidden from other claims until ``now + lease``."""
        ...

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: Attempt,
        status: str,
        disable_after: timedelta,
        journal: Journal,
    ) -> bool:
        """Log an attempt and set the delivery's state (``delivered``, ``pending`` with
        the attempt's ``next_attempt_at``, or ``failed``). The endpoint's failing period
        starts at its first failure and ends at a success; a failure past ``disable_after``
        into it disables the endpoint and records ``webhook.endpoint.disabled`` in
        ``journal`` (written in this transaction). True when it disabled the endpoint."""
        ...

    async def list_deliveries(
        self, org_id: str, endpoint_id: str, before: str | None, limit: int
    ) -> builtins.list[Delivery]:
        """An endpoint's deliveries, newest first, with their attempts."""
        ...

    async def replay(self, org_id: str, endpoint_id: str, delivery_id: str, now: datetime) -> None:
        """Make a delivery due again at ``now`` (same event id); NotFoundError otherwise."""
        ...

    async def notify(self, journal: Journal) -> None:
        """Commit a journal of notifications alone (no other change): its events reach the
        outbox through the journal writers."""
        ...

    async def expiring_keys(
        self,
        after: datetime,
        until: datetime,
        cursor: tuple[datetime, str] | None,
        limit: int,
    ) -> builtins.list[KeyRecord]:
        """Active keys (any organization) expiring in ``(after, until]``, by expiry time then
        id, from past ``cursor`` (the last key's expiry time and id)."""
        ...

    async def notice_once(self, subject: str, journal: Journal, at: datetime) -> bool:
        """Record ``subject`` as noticed and commit the journal with it, unless it was
        already: False then, and nothing is written."""
        ...


class SqlWebhookStore:
    """:class:`WebhookStore` over the shared unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def create_endpoint(self, endpoint: Endpoint, journal: Journal) -> Endpoint:
        async with self._unit.write(journal) as conn:
            await conn.execute(insert(webhook_endpoints).values(**_endpoint_values(endpoint)))
        return endpoint

    async def get_endpoint(self, org_id: str, endpoint_id: str) -> Endpoint | None:
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(webhook_endpoints).where(
                        webhook_endpoints.c.org_id == org_id, webhook_endpoints.c.id == endpoint_id
                    )
                )
            ).first()
        return None if row is None else _endpoint(row)

    async def list_endpoints(self, org_id: str) -> builtins.list[Endpoint]:
        async with self._unit.read() as conn:
            rows = await conn.execute(
                select(webhook_endpoints)
                .where(webhook_endpoints.c.org_id == org_id)
                .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
            )
            return [_endpoint(row) for row in rows]

    async def update_endpoint(
        self,
        org_id: str,
        endpoint_id: str,
        mutate: Callable[[Endpoint], Endpoint],
        journal: Journal,
    ) -> Endpoint:
        async with self._unit.write(journal) as conn:
            current = await self._locked(conn, org_id, endpoint_id)
            changed = mutate(current)
            values = _endpoint_values(changed)
            for immutable in ("id", "org_id", "created_at"):
                values.pop(immutable)
            await conn.execute(
                update(webhook_endpoints)
                .where(webhook_endpoints.c.id == endpoint_id)
                .values(**values)
            )
        return changed

    async def delete_endpoint(self, org_id: str, endpoint_id: str, journal: Journal) -> Endpoint:
        async with self._unit.write(journal) as conn:
            current = await self._locked(conn, org_id, endpoint_id)
            delivery_ids = select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.endpoint_id == endpoint_id
            )
            # Explicitly, not by cascade: SQLite enforces ON DELETE only with foreign keys on.
            await conn.execute(
                delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(delivery_ids))
            )
            await conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id)
            )
            await conn.execute(
                delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
            )
        return current

    async def _locked(self, conn: AsyncConnection, org_id: str, endpoint_id: str) -> Endpoint:
        row = (
            await conn.execute(
                select(webhook_endpoints)
                .where(webhook_endpoints.c.org_id == org_id, webhook_endpoints.c.id == endpoint_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id!r}", code="WEBHOOK_NOT_FOUND")
        return _endpoint(row)

    async def write_outbox(self, conn: AsyncConnection, journal: Journal) -> None:
        """The journal writer: one delivery per change and subscribed enabled endpoint.

        One ``INSERT ... SELECT`` per change, the endpoints' filters matched in SQL (indexed
        on the organization): the same single statement whether or not an endpoint
        subscribes, so the outbox costs a change about as much with endpoints as without.
        A delivery's id is its event's time-ordered id with its endpoint's random part, so
        deliveries sort by event time.
        """
        e, d = webhook_endpoints, webhook_deliveries
        columns = [
            d.c.id,
            d.c.endpoint_id,
            d.c.org_id,
            d.c.event_id,
            d.c.event_type,
            d.c.payload,
            d.c.status,
            d.c.attempts,
            d.c.created_at,
            d.c.next_attempt_at,
        ]
        for change in journal.changes:
            if change.action not in webhook_events.EVENTS:
                continue
            event_id = ids.new_id("msg")
            body = webhook_events.encode(webhook_events.payload(change, journal.actor, journal.at))
            event_part = event_id.removeprefix("msg_")[:16]
            chosen = select(
                (literal("whd_" + event_part) + func.substr(e.c.id, 21, 10)).label("id"),
                e.c.id,
                literal(change.org_id),
                literal(event_id),
                literal(change.action),
                literal(body),
                literal(PENDING),
                literal(0),
                literal(journal.at, UTCDateTime()),
                literal(journal.at, UTCDateTime()),
            ).where(
                e.c.org_id == change.org_id,
                e.c.enabled.is_(True),
                or_(e.c.project_id.is_(None), e.c.project_id == change.project_id),
                self._subscribed(webhook_events.filters_for(change.action)),
            )
            await conn.execute(insert(d).from_select(columns, chosen))

    def _subscribed(self, filters: builtins.list[str]) -> ColumnElement[bool]:
        """An endpoint's ``events`` holds one of ``filters``."""
        events = webhook_endpoints.c.events
        if not self._unit.is_sqlite:
            return func.jsonb_exists_any(events, cast(filters, ARRAY(String))).is_(True)
        each = func.json_each(events).table_valued("value").alias("subscribed")
        return exists(select(literal(1)).select_from(each).where(each.c.value.in_(filters)))

    async def enqueue(self, endpoint: Endpoint, event_type: str, payload: str, at: datetime) -> str:
        row = _new_delivery(
            endpoint.id, endpoint.org_id, ids.new_id("msg"), event_type, payload, at
        )
        async with self._unit.write() as conn:
            await conn.execute(insert(webhook_deliveries).values(**row))
        return str(row["id"])

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> builtins.list[Claimed]:
        d, e = webhook_deliveries, webhook_endpoints
        query = (
            select(d.c.id)
            .where(d.c.status == PENDING, d.c.next_attempt_at <= now)
            .where(
                d.c.endpoint_id.in_(select(e.c.id).where(e.c.enabled.is_(True))),
            )
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(limit)
        )
        if not self._unit.is_sqlite:
            # Rows another worker holds are passed over, not waited for.
            query = query.with_for_update(skip_locked=True)
        async with self._unit.write() as conn:
            claimed = [row.id for row in await conn.execute(query)]
            if not claimed:
                return []
            await conn.execute(
                update(d).where(d.c.id.in_(claimed)).values(next_attempt_at=now + lease)
            )
            rows = (
                await conn.execute(
                    select(d, *[column.label("e_" + column.name) for column in e.c])
                    .join(e, e.c.id == d.c.endpoint_id)
                    .where(d.c.id.in_(claimed))
                    .order_by(d.c.created_at)
                )
            ).all()
        return [Claimed(_delivery(row), _endpoint(row, "e_")) for row in rows]

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: Attempt,
        status: str,
        disable_after: timedelta,
        journal: Journal,
    ) -> bool:
        d, e = webhook_deliveries, webhook_endpoints
        async with self._unit.write(journal) as conn:
            row = (
                await conn.execute(
                    select(d.c.endpoint_id, d.c.attempts).where(d.c.id == delivery_id)
                )
            ).first()
            if row is None:  # deleted with its endpoint meanwhile
                return False
            number = row.attempts + 1
            await conn.execute(
                update(d)
                .where(d.c.id == delivery_id)
                .values(
                    status=status,
                    attempts=number,
                    next_attempt_at=attempt.next_attempt_at if status == PENDING else None,
                    delivered_at=attempt.at if status == DELIVERED else None,
                    last_status_code=attempt.status_code,
                    last_error=attempt.error,
                )
            )
            if number <= MAX_LOGGED_ATTEMPTS:
                await conn.execute(
                    insert(webhook_attempts).values(
                        delivery_id=delivery_id,
                        number=number,
                        at=attempt.at,
                        status_code=attempt.status_code,
                        latency_ms=attempt.latency_ms,
                        error=attempt.error,
                        next_attempt_at=attempt.next_attempt_at,
                    )
                )
            if status == DELIVERED:
                # No row lock on the common path: concurrent successes to one endpoint would
                # queue on it. A conditional update writes only when it was failing.
                await conn.execute(
                    update(e)
                    .where(e.c.id == row.endpoint_id, e.c.failing_since.is_not(None))
                    .values(failing_since=None)
                )
                return False
            endpoint = _endpoint(
                (
                    await conn.execute(select(e).where(e.c.id == row.endpoint_id).with_for_update())
                ).one()
            )
            since = endpoint.failing_since or attempt.at
            if endpoint.failing_since is None:
                await conn.execute(
                    update(e).where(e.c.id == endpoint.id).values(failing_since=since)
                )
            if not endpoint.enabled or attempt.at - since < disable_after:
                return False
            await conn.execute(
                update(e)
                .where(e.c.id == endpoint.id)
                .values(enabled=False, disabled_reason="failing", updated_at=attempt.at)
            )
            journal.record(
                "webhook.endpoint.disabled",
                org_id=endpoint.org_id,
                target_type="webhook_endpoint",
                target_id=endpoint.id,
                project_id=endpoint.project_id,
                details={
                    "url": endpoint.url,
                    "kind": endpoint.kind,
                    "failing_since": since,
                    "reason": "failing",
                },
                audited=False,
            )
            return True

    async def list_deliveries(
        self, org_id: str, endpoint_id: str, before: str | None, limit: int
    ) -> builtins.list[Delivery]:
        d, a = webhook_deliveries, webhook_attempts
        query = select(d).where(d.c.org_id == org_id, d.c.endpoint_id == endpoint_id)
        if before is not None:
            query = query.where(d.c.id < before)
        async with self._unit.read() as conn:
            rows = (await conn.execute(query.order_by(d.c.id.desc()).limit(limit))).all()
            found = [row.id for row in rows]
            attempts: dict[str, list[Attempt]] = {}
            if found:
                for att in await conn.execute(
                    select(a).where(a.c.delivery_id.in_(found)).order_by(a.c.number)
                ):
                    attempts.setdefault(att.delivery_id, []).append(_attempt(att))
        return [_delivery(row, tuple(attempts.get(row.id, ()))) for row in rows]

    async def replay(self, org_id: str, endpoint_id: str, delivery_id: str, now: datetime) -> None:
        d = webhook_deliveries
        async with self._unit.write() as conn:
            result = await conn.execute(
                update(d)
                .where(d.c.org_id == org_id, d.c.endpoint_id == endpoint_id, d.c.id == delivery_id)
                .values(status=PENDING, next_attempt_at=now)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no delivery {delivery_id!r}", code="DELIVERY_NOT_FOUND")

    async def notify(self, journal: Journal) -> None:
        if journal.changes:
            async with self._unit.write(journal):
                pass

    async def expiring_keys(
        self,
        after: datetime,
        until: datetime,
        cursor: tuple[datetime, str] | None,
        limit: int,
    ) -> builtins.list[KeyRecord]:
        k = api_keys
        query = select(k).where(
            k.c.status == KeyStatus.ACTIVE.value, k.c.expires_at > after, k.c.expires_at <= until
        )
        if cursor is not None:
            query = query.where(
                or_(
                    k.c.expires_at > cursor[0],
                    and_(k.c.expires_at == cursor[0], k.c.id > cursor[1]),
                )
            )
        async with self._unit.read() as conn:
            rows = await conn.execute(query.order_by(k.c.expires_at, k.c.id).limit(limit))
            return [key_from_row(row) for row in rows]

    async def notice_once(self, subject: str, journal: Journal, at: datetime) -> bool:
        async with self._unit.write(journal) as conn:
            seen = (
                await conn.execute(
                    select(webhook_notices.c.subject).where(webhook_notices.c.subject == subject)
                )
            ).first()
            if seen is not None:
                journal.discard()
                return False
            await conn.execute(insert(webhook_notices).values(subject=subject, sent_at=at))
        return True


def _new_delivery(
    endpoint_id: str, org_id: str, event_id: str, event_type: str, body: str, at: datetime
) -> dict[str, Any]:
    return {
        "id": ids.new_id("whd"),
        "endpoint_id": endpoint_id,
        "org_id": org_id,
        "event_id": event_id,
        "event_type": event_type,
        "payload": body,
        "status": PENDING,
        "attempts": 0,
        "created_at": at,
        "next_attempt_at": at,
    }


def _endpoint_values(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "org_id": endpoint.org_id,
        "project_id": endpoint.project_id,
        "kind": endpoint.kind,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "sealed_secret": endpoint.sealed_secret,
        "previous_sealed_secret": endpoint.previous_sealed_secret,
        "previous_until": endpoint.previous_until,
        "failing_since": endpoint.failing_since,
        "disabled_reason": endpoint.disabled_reason,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }


def _endpoint(row: Row[Any], prefix: str = "") -> Endpoint:
    m = row._mapping
    return Endpoint(
        id=m[prefix + "id"],
        org_id=m[prefix + "org_id"],
        project_id=m[prefix + "project_id"],
        kind=m[prefix + "kind"],
        url=m[prefix + "url"],
        description=m[prefix + "description"],
        events=tuple(m[prefix + "events"]),
        enabled=bool(m[prefix + "enabled"]),
        sealed_secret=m[prefix + "sealed_secret"],
        created_at=m[prefix + "created_at"],
        updated_at=m[prefix + "updated_at"],
        previous_sealed_secret=m[prefix + "previous_sealed_secret"],
        previous_until=m[prefix + "previous_until"],
        failing_since=m[prefix + "failing_since"],
        disabled_reason=m[prefix + "disabled_reason"],
    )


def _delivery(row: Row[Any], history: tuple[Attempt, ...] = ()) -> Delivery:
    return Delivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        org_id=row.org_id,
        event_id=row.event_id,
        event_type=row.event_type,
        payload=row.payload,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        history=history,
    )


def _attempt(row: Row[Any]) -> Attempt:
    return Attempt(
        number=row.number,
        at=row.at,
        status_code=row.status_code,
        latency_ms=row.latency_ms,
        error=row.error,
        next_attempt_at=row.next_attempt_at,
    )


__all__ = ["FAILED", "SqlWebhookStore", "WebhookStore"]
