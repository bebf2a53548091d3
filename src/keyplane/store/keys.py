"""API keys and their secrets: :class:`KeyStore` and its SQL implementation."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from keyplane.domain import ids
from keyplane.domain.changes import Journal
from keyplane.domain.frozen import fast_init
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus
from keyplane.domain.rotation import HeldSecret, ScheduleAdvance
from keyplane.errors import NotFoundError
from keyplane.store.idempotency import IdempotencyRecord, insert_idempotency
from keyplane.store.key_metadata import (
    SELECTIVITY_CAP,
    indexed_entries,
    matching_page,
    merged_page,
    plan_filters,
    write_index,
)
from keyplane.store.rotations import advance_schedule, follow_plan, hold_secret, restart_age
from keyplane.store.tables import api_key_secrets, api_key_tags, api_keys, plans
from keyplane.store.unit import UnitOfWork

#: A pure function from the current record to the new one; may raise a KeyplaneError to refuse.
KeyMutation = Callable[[KeyRecord], KeyRecord]


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Filters for listing keys; all given filters must match."""

    owner: str | None = None
    tag: str | None = None
    environment: Environment | None = None
    status: KeyStatus | None = None
    project_id: str | None = None
    name_contains: str | None = None
    #: (path segments, expected text value) pairs, from ``metadata.a.b=value``.
    metadata: Sequence[tuple[tuple[str, ...], str]] = field(default_factory=tuple)


@fast_init
@dataclass(frozen=True, slots=True)
class SecretMatch:
    """A key found by the hash of a presented secret."""

    record: KeyRecord
    #: End of the grace period when the secret was rotated out; ``None`` for the current one.
    valid_until: datetime | None
    plan_name: str | None = None
    #: The policy document of the key's plan, when it has one.
    plan_policy: dict[str, Any] | None = None
    #: The sealed request-signing secret issued with this key secret (domain/sealing.py).
    sealed_signing_secret: str | None = None
    #: The hash of the presented secret (that the sealed signing secret is bound to).
    secret_hash: str = ""


class KeyLookup(Protocol):
    """The two reads the data plane's key cache loads from (``store/lean.py`` answers them
    without the ORM; :class:`SqlKeyStore` is the reference)."""

    async def find_by_secret(self, secret_hash: str) -> SecretMatch | None:
        """The key a presented secret belongs to, in any organization, with its plan; the
        secret may be the current one or one rotated out (``valid_until`` then set)."""
        ...

    async def find_by_id(self, key_id: str) -> SecretMatch | None:
        """A key by id, with its plan, in any organization (the caller checks tenancy)."""
        ...


class KeyStore(KeyLookup, Protocol):
    """API keys. Writes are one transaction each, committed before the method returns."""

    async def create(
        self,
        record: KeyRecord,
        idempotency: IdempotencyRecord | None = None,
        journal: Journal | None = None,
        sealed_signing_secret: str | None = None,
    ) -> KeyRecord:
        """Insert a key, its current secret hash and tags, and its idempotency record if any,
        in one transaction (with what ``journal`` recorded); ``sealed_signing_secret`` goes
        beside the secret hash.

        Raises ConflictError when the hash is taken, or when that idempotency record exists
        already (a concurrent retry: it fails before anything of it is inserted).
        """
        ...

    async def get(self, org_id: str, id_or_hash: str) -> KeyRecord | None:
        """A key by id or by the hash of its current secret, within ``org_id`` only."""
        ...

    async def list_page(
        self, org_id: str, filters: KeyFilter, now: datetime, after: str | None, limit: int
    ) -> builtins.list[KeyRecord]:
        """Up to ``limit`` keys of ``org_id`` matching every filter, in id (creation) order,
        after the cursor ``after``; the status filter is the effective status at ``now``."""
        ...

    async def mutate(
        self, org_id: str, key_id: str, mutation: KeyMutation, journal: Journal | None = None
    ) -> KeyRecord:
        """Apply ``mutation`` to the current record, locked, and save it atomically, with
        what ``journal`` recorded (``mutation`` may record into it).

        Concurrent mutations of one key take turns (each sees the previous one's result);
        NotFoundError when the key is not in ``org_id``; an error ``mutation`` raises
        changes nothing.
        """
        ...

    async def rotate(
        self,
        org_id: str,
        key_id: str,
        mutation: KeyMutation,
        grace_until: datetime,
        journal: Journal | None = None,
        sealed_signing_secret: str | None = None,
        held: Callable[[KeyRecord], HeldSecret] | None = None,
        due: ScheduleAdvance | None = None,
    ) -> tuple[KeyRecord, builtins.list[str]]:
        """Install the new secret hash that ``mutation`` sets (with its sealed signing secret);
        end the old ones at ``grace_until`` (never extending an earlier, shorter grace). One
        transaction; each old secret keeps its own signing secret until then.

        A pending held rotation secret of the key is superseded (erased); ``held`` (from the
        locked current record, an automatic rotation's sealed new secret) is held instead.
        With ``due`` the key's rotation schedule advances in the same transaction, only if
        still at the expected time: ConflictError ``ROTATION_NOT_DUE`` and nothing changes
        when another instance rotated it first.

        Returns the new record and the hashes whose validity changed (for cache eviction).
        """
        ...

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Advance ``last_used_at`` of many keys in one transaction (never moves it back)."""
        ...


class SqlKeyStore:
    """:class:`KeyStore` over the shared unit of work."""

    #: A metadata filter matching at least this many keys counts as common (tests lower it to
    #: reach the plan for common filters with a few keys).
    selectivity_cap = SELECTIVITY_CAP

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def create(
        self,
        record: KeyRecord,
        idempotency: IdempotencyRecord | None = None,
        journal: Journal | None = None,
        sealed_signing_secret: str | None = None,
    ) -> KeyRecord:
        async with self._unit.write(journal) as conn:
            if idempotency is not None:
                # First, so a concurrent retry fails here, before it has inserted anything.
                await insert_idempotency(conn, idempotency)
            await conn.execute(insert(api_keys).values(**_key_values(record)))
            await conn.execute(
                insert(api_key_secrets).values(
                    hash=record.hash,
                    key_id=record.id,
                    created_at=record.created_at,
                    valid_until=None,
                    sealed_signing_secret=sealed_signing_secret,
                )
            )
            await _write_tags(conn, record.id, record.tags, replace=False)
            await write_index(conn, record.id, record.org_id, record.metadata, replace=False)
            await follow_plan(
                conn, record.id, record.org_id, record.plan_id, record.created_at, record.created_at
            )
        return record

    async def get(self, org_id: str, id_or_hash: str) -> KeyRecord | None:
        column = api_keys.c.id if ids.looks_like_id(id_or_hash, "key") else api_keys.c.hash
        async with self._unit.read() as conn:
            row = (
                await conn.execute(
                    select(api_keys).where(api_keys.c.org_id == org_id, column == id_or_hash)
                )
            ).first()
        return None if row is None else key_from_row(row)

    async def find_by_secret(self, secret_hash: str) -> SecretMatch | None:
        query = (
            _match_query(
                api_key_secrets.c.valid_until.label("secret_valid_until"),
                api_key_secrets.c.sealed_signing_secret,
            )
            .join(api_key_secrets, api_key_secrets.c.key_id == api_keys.c.id)
            .where(api_key_secrets.c.hash == secret_hash)
        )
        async with self._unit.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return SecretMatch(
            key_from_row(row),
            row.secret_valid_until,
            row.plan_name,
            row.plan_policy,
            row.sealed_signing_secret,
            secret_hash,
        )

    async def find_by_id(self, key_id: str) -> SecretMatch | None:
        query = _match_query().where(api_keys.c.id == key_id)
        async with self._unit.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return SecretMatch(key_from_row(row), None, row.plan_name, row.plan_policy)

    async def list_page(
        self, org_id: str, filters: KeyFilter, now: datetime, after: str | None, limit: int
    ) -> builtins.list[KeyRecord]:
        conditions: builtins.list[ColumnElement[bool]] = [api_keys.c.org_id == org_id]
        if filters.owner is not None:
            conditions.append(api_keys.c.owner == filters.owner)
        if filters.environment is not None:
            conditions.append(api_keys.c.environment == filters.environment.value)
        if filters.project_id is not None:
            conditions.append(api_keys.c.project_id == filters.project_id)
        if filters.name_contains:
            conditions.append(api_keys.c.name.icontains(filters.name_contains, autoescape=True))
        if filters.tag is not None:
            conditions.append(
                api_keys.c.id.in_(
                    select(api_key_tags.c.key_id).where(api_key_tags.c.tag == filters.tag)
                )
            )
        if filters.status is not None:
            conditions.append(_status_condition(filters.status, now))
        async with self._unit.read() as conn:
            if filters.metadata:
                plan = await plan_filters(conn, org_id, filters.metadata, self.selectivity_cap)
                if plan.all_common and conn.dialect.name == "sqlite":
                    # conditions[0] is the organization, which the index entries name.
                    query = merged_page(org_id, plan.filters, after, conditions[1:], limit)
                    return [key_from_row(row) for row in await conn.execute(query)]
                query = matching_page(org_id, plan.filters, after)
            else:
                query = select(api_keys).order_by(api_keys.c.id)
                if after is not None:
                    query = query.where(api_keys.c.id > after)
            query = query.where(*conditions).limit(limit)
            return [key_from_row(row) for row in await conn.execute(query)]

    async def mutate(
        self, org_id: str, key_id: str, mutation: KeyMutation, journal: Journal | None = None
    ) -> KeyRecord:
        async with self._unit.write(journal) as conn:
            current = await _locked_key(conn, org_id, key_id)
            updated = mutation(current)
            await _save_key(conn, current, updated)
        return updated

    async def rotate(
        self,
        org_id: str,
        key_id: str,
        mutation: KeyMutation,
        grace_until: datetime,
        journal: Journal | None = None,
        sealed_signing_secret: str | None = None,
        held: Callable[[KeyRecord], HeldSecret] | None = None,
        due: ScheduleAdvance | None = None,
    ) -> tuple[KeyRecord, builtins.list[str]]:
        async with self._unit.write(journal) as conn:
            current = await _locked_key(conn, org_id, key_id)
            if due is not None:
                await advance_schedule(conn, key_id, due)
            else:
                await restart_age(conn, key_id, current_time(journal, current))
            updated = mutation(current)
            # Shorten, never extend, the grace of secrets rotated out earlier.
            ended = await conn.execute(
                update(api_key_secrets)
                .where(
                    api_key_secrets.c.key_id == key_id,
                    or_(
                        api_key_secrets.c.valid_until.is_(None),
                        api_key_secrets.c.valid_until > grace_until,
                    ),
                )
                .values(valid_until=grace_until)
                .returning(api_key_secrets.c.hash)
            )
            changed = [row.hash for row in ended]
            await conn.execute(
                insert(api_key_secrets).values(
                    hash=updated.hash,
                    key_id=key_id,
                    created_at=updated.updated_at,
                    valid_until=None,
                    sealed_signing_secret=sealed_signing_secret,
                )
            )
            await _save_key(conn, current, updated)
            await hold_secret(
                conn, key_id, updated.updated_at, None if held is None else held(current)
            )
        return updated, changed

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        await touch_last_used(self._unit, api_keys, last_used)


async def touch_last_used(
    unit: UnitOfWork, table: Table, last_used: Mapping[str, datetime]
) -> None:
    """Advance ``last_used_at`` of the rows of ``table`` (by id), never moving it back.

    The rows are updated, and so locked, in the order of their ids: instances flushing the
    same keys at once then wait for each other in turn, where each one's own order (that of
    its traffic) would make a cycle, which PostgreSQL breaks by aborting one of them."""
    if not last_used:
        return
    statement = (
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            or_(table.c.last_used_at.is_(None), table.c.last_used_at < bindparam("b_when")),
        )
        .values(last_used_at=bindparam("b_when"))
    )
    rows = [{"b_id": key_id, "b_when": last_used[key_id]} for key_id in sorted(last_used)]
    async with unit.write() as conn:
        await conn.execute(statement, rows)


def current_time(journal: Journal | None, current: KeyRecord) -> datetime:
    """The time of a change: its journal's, else the record's last update (never earlier)."""
    return journal.at if journal is not None else current.updated_at


def _match_query(*extra: Any) -> Any:
    """A key with its plan's name and policy."""
    return select(
        api_keys, *extra, plans.c.name.label("plan_name"), plans.c.policy.label("plan_policy")
    ).outerjoin(plans, plans.c.id == api_keys.c.plan_id)


async def _locked_key(conn: AsyncConnection, org_id: str, key_id: str) -> KeyRecord:
    row = (
        await conn.execute(
            select(api_keys)
            .where(api_keys.c.org_id == org_id, api_keys.c.id == key_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no key {key_id!r}")
    return key_from_row(row)


async def _save_key(conn: AsyncConnection, current: KeyRecord, updated: KeyRecord) -> None:
    values = _key_values(updated)
    for immutable in ("id", "org_id", "created_at"):
        values.pop(immutable)
    await conn.execute(update(api_keys).where(api_keys.c.id == current.id).values(**values))
    if updated.tags != current.tags:
        await _write_tags(conn, updated.id, updated.tags, replace=True)
    # Compared as index entries, not dicts: in Python 1 == 1.0 == True, but their texts differ.
    if set(indexed_entries(updated.metadata)) != set(indexed_entries(current.metadata)):
        await write_index(conn, updated.id, updated.org_id, updated.metadata, replace=True)
    if updated.plan_id != current.plan_id:
        await follow_plan(
            conn,
            current.id,
            current.org_id,
            updated.plan_id,
            current.created_at,
            updated.updated_at,
        )


def _status_condition(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    """SQL for the *effective* status at ``now`` (see ``domain.keys.effective_status``)."""
    stored = api_keys.c.status
    expired = and_(api_keys.c.expires_at.is_not(None), api_keys.c.expires_at <= now)
    not_expired = or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now)
    auto_enabled = and_(api_keys.c.auto_enable_at.is_not(None), api_keys.c.auto_enable_at <= now)
    if status is KeyStatus.REVOKED:
        return stored == KeyStatus.REVOKED.value
    if status is KeyStatus.EXPIRED:
        return and_(stored != KeyStatus.REVOKED.value, expired)
    if status is KeyStatus.DISABLED:
        return and_(stored == KeyStatus.DISABLED.value, not_expired, ~auto_enabled)
    if status is KeyStatus.PENDING:
        return and_(stored == KeyStatus.PENDING.value, not_expired)
    return and_(
        not_expired,
        or_(
            stored == KeyStatus.ACTIVE.value, and_(stored == KeyStatus.DISABLED.value, auto_enabled)
        ),
    )


async def _write_tags(
    conn: AsyncConnection, key_id: str, tags: tuple[str, ...], *, replace: bool
) -> None:
    if replace:
        await conn.execute(api_key_tags.delete().where(api_key_tags.c.key_id == key_id))
    if tags:
        await conn.execute(insert(api_key_tags), [{"key_id": key_id, "tag": t} for t in tags])


def _key_values(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "org_id": record.org_id,
        "project_id": record.project_id,
        "hash": record.hash,
        "start": record.start,
        "end": record.end,
        "name": record.name,
        "label": record.label,
        "description": record.description,
        "owner": record.owner,
        "environment": record.environment.value,
        "tags": list(record.tags),
        "meta": record.metadata,
        "scopes": list(record.scopes),
        "status": record.status.value,
        "disabled_reason": record.disabled_reason,
        "auto_enable_at": record.auto_enable_at,
        "revoked_reason": record.revoked_reason,
        "revoked_at": record.revoked_at,
        "expires_at": record.expires_at,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "last_used_at": record.last_used_at,
        "plan_id": record.plan_id,
        "policy": record.policy,
        "created_by": record.created_by,
    }


def key_from_row(row: Row[Any]) -> KeyRecord:
    """A :class:`KeyRecord` from a row holding the columns of ``api_keys``."""
    m = row._mapping
    return KeyRecord(
        id=m["id"],
        org_id=m["org_id"],
        project_id=m["project_id"],
        hash=m["hash"],
        start=m["start"],
        end=m["end"],
        name=m["name"],
        environment=Environment(m["environment"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        status=KeyStatus(m["status"]),
        label=m["label"],
        description=m["description"],
        owner=m["owner"],
        tags=tuple(m["tags"]),
        metadata=m["meta"],
        scopes=tuple(m["scopes"]),
        expires_at=m["expires_at"],
        disabled_reason=m["disabled_reason"],
        auto_enable_at=m["auto_enable_at"],
        revoked_reason=m["revoked_reason"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
        plan_id=m["plan_id"],
        policy=m["policy"],
        created_by=m["created_by"],
    )
