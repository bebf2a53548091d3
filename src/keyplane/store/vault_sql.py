"""The vault store's SQL fragments and row mapping, shared by ``store/vault.py``."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.elements import BindParameter

from keyplane.domain import ids
from keyplane.domain.vault import Candidate, Choice, CredentialRecord, CredentialStatus, choose
from keyplane.store.tables import vault_credentials, vault_leases
from keyplane.store.unit import metadata_text
from keyplane.store.vault_base import CredentialFilter, Lease, LeaseAsk

#: Clear a credential's expired leases on every this many leases of it.
SWEEP_EVERY = 16
#: Lock statements kept (one per organization and lease filter in use).
STATEMENT_CACHE_SIZE = 256

K = TypeVar("K")
V = TypeVar("V")


def cached(cache: dict[K, V], key: K | None, build: Callable[[], V]) -> V:
    """``cache[key]``, built on a miss; at most :data:`STATEMENT_CACHE_SIZE` entries (full, it
    starts over). A ``None`` key (a filter holding lists, not hashable) builds every time."""
    if key is None:
        return build()
    found = cache.get(key)
    if found is None:
        if len(cache) >= STATEMENT_CACHE_SIZE:
            cache.clear()
        found = cache[key] = build()
    return found


#: Count uses of a leased credential; run as one executemany per batch.
COUNT_USE = (
    update(vault_credentials)
    .where(vault_credentials.c.id == bindparam("key"))
    .values(
        day_start=bindparam("day_start"),
        day_count=bindparam("day_count"),
        month_start=bindparam("month_start"),
        month_count=bindparam("month_count"),
        total_count=bindparam("total_count"),
        last_used_at=bindparam("last_used_at"),
    )
)


def count_use_values(record: CredentialRecord) -> dict[str, Any]:
    """:data:`COUNT_USE`'s parameters for a credential just used."""
    return {"key": record.id, **_use_counters(record)}


def _use_counters(record: CredentialRecord) -> dict[str, Any]:
    return {
        "day_start": record.day_start,
        "day_count": record.day_count,
        "month_start": record.month_start,
        "month_count": record.month_count,
        "total_count": record.total_count,
        "last_used_at": record.last_used_at,
    }


#: A write matching no row: takes SQLite's write lock, writes nothing.
CLAIM_SQLITE_WRITER = (
    update(vault_credentials).where(vault_credentials.c.id == "").values(id=vault_credentials.c.id)
)


def credential_conditions(
    org_id: str, filters: CredentialFilter, *, is_sqlite: bool
) -> list[ColumnElement[bool]]:
    table = vault_credentials
    conditions: list[ColumnElement[bool]] = [table.c.org_id == org_id]
    if filters.seen_from_project is not None:
        conditions.append(reached_from(filters.seen_from_project))
    if filters.provider is not None:
        conditions.append(table.c.provider == filters.provider)
    if filters.environment is not None:
        conditions.append(table.c.environment == filters.environment)
    if filters.status is not None:
        conditions.append(table.c.status == stored_status(filters.status))
    for tag in filters.tags:
        conditions.append(has_tag(tag, is_sqlite=is_sqlite))
    for path, value in filters.metadata:
        conditions.append(metadata_text(table.c.meta, path, is_sqlite=is_sqlite) == value)
    return conditions


def leases_reached(
    org_id: str | BindParameter[str], seen_from_project: str | BindParameter[str] | None
) -> list[ColumnElement[bool]]:
    """Conditions on lease rows: their credential is within the caller's reach (values,
    or parameters bound later)."""
    if seen_from_project is None:
        return []
    reached = select(vault_credentials.c.id).where(
        vault_credentials.c.org_id == org_id, reached_from(seen_from_project)
    )
    return [vault_leases.c.credential_id.in_(reached)]


def has_tag(tag: str, *, is_sqlite: bool) -> ColumnElement[bool]:
    if not is_sqlite:
        contains: ColumnElement[bool] = cast(vault_credentials.c.tags, JSONB).contains(
            cast(func.jsonb_build_array(cast(bindparam(None, tag), Text)), JSONB)
        )
        return contains
    elements = func.json_each(vault_credentials.c.tags).table_valued("value")
    return exists(select(1).select_from(elements).where(elements.c.value == tag))


def reached_from(project_id: str | BindParameter[str]) -> ColumnElement[bool]:
    """SQL of ``CredentialRecord.reachable_from`` for a project-bound caller: the project's
    own credentials, and org-wide ones the operator shared with projects."""
    table = vault_credentials
    return or_(
        table.c.project_id == project_id,
        and_(table.c.project_id.is_(None), table.c.shared_with_projects.is_(true())),
    )


def stored_status(status: CredentialStatus) -> str:
    # cooling_down is not stored: it is active with a cool-down running.
    if status is CredentialStatus.COOLING_DOWN:
        return CredentialStatus.ACTIVE.value
    return status.value


@dataclass(slots=True)
class Decided:
    answers: list[Lease | Choice | Exception] = field(default_factory=list)
    new_leases: list[dict[str, Any]] = field(default_factory=list)
    used: dict[str, CredentialRecord] = field(default_factory=dict)
    sweep: set[str] = field(default_factory=set)


def decide(
    asks: Sequence[LeaseAsk],
    org_id: str,
    locked: Mapping[str, CredentialRecord],
    counted: Mapping[str, tuple[int, datetime | None]],
    now: datetime,
    rng: random.Random | None,
) -> Decided:
    """Decide the asks of a batch in turn, in memory, each seeing what the earlier took."""
    records, live, decided = dict(locked), dict(counted), Decided()
    answers, new_leases, used, sweep = (
        decided.answers,
        decided.new_leases,
        decided.used,
        decided.sweep,
    )
    for ask in asks:
        candidates = [Candidate(r, *live.get(r.id, (0, None))) for r in records.values()]
        choice = choose(candidates, ask.strategy, now, rng)
        if choice.record is None:
            answers.append(choice)
            continue
        chosen = choice.record
        try:
            secret = ask.open_secret(chosen)
        except Exception as exc:  # its own answer; no slot or use taken
            answers.append(exc)
            continue
        if chosen.total_count % SWEEP_EVERY == 0:
            sweep.add(chosen.id)
        after = chosen.used_once(now)
        records[chosen.id] = used[chosen.id] = after
        count, earliest = live.get(chosen.id, (0, None))
        expires_at = now + ask.ttl
        live[chosen.id] = (
            count + 1,
            expires_at if earliest is None else min(earliest, expires_at),
        )
        lease_id = ids.new_id("lease")
        new_leases.append(
            {
                "id": lease_id,
                "org_id": org_id,
                "credential_id": chosen.id,
                "created_at": now,
                "expires_at": expires_at,
            }
        )
        answers.append(Lease(lease_id, after, secret, now, expires_at))
    return decided


async def live_lease_counts(
    conn: AsyncConnection, credential_ids: Sequence[str], now: datetime
) -> dict[str, tuple[int, datetime | None]]:
    """Live lease count and earliest expiry per credential."""
    if not credential_ids:
        return {}
    rows = await conn.execute(
        select(
            vault_leases.c.credential_id,
            func.count(),
            func.min(vault_leases.c.expires_at),
        )
        .where(
            and_(
                vault_leases.c.credential_id.in_(list(credential_ids)),
                vault_leases.c.expires_at > now,
            )
        )
        .group_by(vault_leases.c.credential_id)
    )
    result: dict[str, tuple[int, datetime | None]] = {}
    for credential_id, count, earliest in rows:
        result[credential_id] = (int(count), earliest)
    return result


async def save_credential(conn: AsyncConnection, record: CredentialRecord) -> None:
    values = credential_values(record)
    for immutable in ("id", "org_id", "created_at"):
        values.pop(immutable)
    await conn.execute(
        update(vault_credentials).where(vault_credentials.c.id == record.id).values(**values)
    )


def credential_values(record: CredentialRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "org_id": record.org_id,
        "provider": record.provider,
        "alias": record.alias,
        "project_id": record.project_id,
        "shared_with_projects": record.shared_with_projects,
        "sealed_secret": record.sealed_secret,
        "master_key_id": record.master_key_id,
        "secret_hint": record.secret_hint,
        "environment": record.environment,
        "tags": list(record.tags),
        "meta": record.metadata,
        "weight": record.weight,
        "daily_limit": record.daily_limit,
        "monthly_limit": record.monthly_limit,
        "max_concurrent": record.max_concurrent,
        "status": stored_status(record.status),
        "status_reason": record.status_reason,
        "cooldown_until": record.cooldown_until,
        **_use_counters(record),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "revoked_at": record.revoked_at,
    }


def credential_record(row: Row[Any]) -> CredentialRecord:
    return credential_from(row._mapping)


def credential_from(m: Mapping[Any, Any]) -> CredentialRecord:
    """A credential from its columns by key (``meta`` for the metadata column)."""
    return CredentialRecord(
        id=m["id"],
        org_id=m["org_id"],
        provider=m["provider"],
        alias=m["alias"],
        project_id=m["project_id"],
        shared_with_projects=bool(m["shared_with_projects"]),
        sealed_secret=m["sealed_secret"],
        master_key_id=m["master_key_id"],
        secret_hint=m["secret_hint"],
        environment=m["environment"],
        tags=tuple(m["tags"]),
        metadata=m["meta"],
        weight=m["weight"],
        daily_limit=m["daily_limit"],
        monthly_limit=m["monthly_limit"],
        max_concurrent=m["max_concurrent"],
        status=CredentialStatus(m["status"]),
        status_reason=m["status_reason"],
        cooldown_until=m["cooldown_until"],
        day_start=m["day_start"],
        day_count=m["day_count"],
        month_start=m["month_start"],
        month_count=m["month_count"],
        total_count=m["total_count"],
        last_used_at=m["last_used_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        revoked_at=m["revoked_at"],
    )
