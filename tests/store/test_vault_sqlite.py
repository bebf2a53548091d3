"""SQLite's lease batches in one trip (``store/vault_sqlite.py``) against the reference path.

The one-trip path decides, writes and reads back exactly what the reference path (statement by
statement through SQLAlchemy, ``SqlVaultStore(one_trip=False)``) does. Both run in one
database: the same credentials in two organizations (ids in the same order), the same batches
(asks, releases, clock) for each, the same random draws. Every answer, every credential row
and every live lease count must agree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.domain.vault import Choice, CredentialRecord, CredentialStatus, Strategy
from keyplane.store.database import Database as Db
from keyplane.store.migrate import migrate
from keyplane.store.vault import CredentialFilter, Lease, LeaseAsk, SqlVaultStore
from tests.store.conftest import NOW


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each example (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("vault-one-trip") / "template.db"

    async def build() -> None:
        db = Db.from_url(f"sqlite+aiosqlite:///{path}")
        try:
            await migrate(db.engine)
        finally:
            await db.close()

    asyncio.run(build())
    return path


_CREDENTIAL = st.fixed_dictionaries(
    {
        "weight": st.integers(1, 3),
        "daily_limit": st.sampled_from([None, 1, 3]),
        "monthly_limit": st.sampled_from([None, 2, 5]),
        "max_concurrent": st.sampled_from([None, 1, 2]),
        "status": st.sampled_from([CredentialStatus.ACTIVE] * 4 + [CredentialStatus.DISABLED]),
        "in_project": st.sampled_from([None, "own", "shared"]),
        "opens": st.sampled_from([True] * 5 + [False]),
        "tag": st.sampled_from(["a", "b"]),
        "team": st.sampled_from(["core", "ml"]),
        "cooling": st.booleans(),
    }
)
_STEP = st.fixed_dictionaries(
    {
        "asks": st.integers(0, 4),
        "strategy": st.sampled_from(list(Strategy)),
        "ttl": st.sampled_from([30, 60, 600]),
        "from_project": st.booleans(),
        "tag": st.sampled_from([None, "a"]),
        "team": st.sampled_from([None, "core"]),
        # Indexes into the leases granted so far (modulo), and whether to add an unknown id.
        "releases": st.lists(st.integers(0, 20), max_size=3),
        "unknown_release": st.booleans(),
        "advance": st.sampled_from([0, 0, 45, 3600, 86_400]),
        "seed": st.integers(0, 2**16),
    }
)


@dataclasses.dataclass
class _Side:
    store: SqlVaultStore
    org_id: str
    project_id: str
    #: The credentials' ids, in the order they were drawn (the same order on both sides).
    credentials: list[str]
    leases: list[str] = dataclasses.field(default_factory=list)

    def seen(self, record: CredentialRecord) -> tuple[Any, ...]:
        """A credential as both sides can compare it: its position, not its id."""
        same = dataclasses.replace(record, id="", org_id="", project_id=None)
        return (self.credentials.index(record.id), record.project_id is not None, same)


async def _side(
    db: Db, store: SqlVaultStore, label: str, drawn: list[dict[str, Any]], now: datetime
) -> _Side:
    org, project = await db.tenancy.create_organization(label, now)
    records = []
    for index, fields in enumerate(drawn):
        records.append(
            CredentialRecord(
                id=f"cred_{index:02d}{label}",
                org_id=org.id,
                provider="openai",
                alias=f"c{index}" + ("" if fields["opens"] else "!"),
                sealed_secret=f"sealed-{index}",
                master_key_id="mk1",
                secret_hint="...abcd",
                environment="production",
                tags=(fields["tag"],),
                metadata={"team": {"name": fields["team"]}},
                weight=fields["weight"],
                daily_limit=fields["daily_limit"],
                monthly_limit=fields["monthly_limit"],
                max_concurrent=fields["max_concurrent"],
                status=fields["status"],
                project_id=None if fields["in_project"] is None else project.id,
                shared_with_projects=fields["in_project"] == "shared",
                cooldown_until=now + timedelta(seconds=90) if fields["cooling"] else None,
                created_at=now,
                updated_at=now,
            )
        )
    await store.create_credentials(records)
    return _Side(store, org.id, project.id, [r.id for r in records])


def _open(record: CredentialRecord) -> str:
    if record.alias.endswith("!"):
        raise ValueError("the secret does not open")
    return f"secret-{record.alias}"


async def _step(side: _Side, step: dict[str, Any], now: datetime) -> Any:
    project = side.project_id if step["from_project"] else None
    filters = CredentialFilter(
        provider="openai",
        tags=() if step["tag"] is None else (step["tag"],),
        metadata=() if step["team"] is None else ((("team", "name"), step["team"]),),
        seen_from_project=project,
    )
    open_secret: Callable[[CredentialRecord], str] = _open
    asks = [
        LeaseAsk(
            side.org_id, filters, step["strategy"], timedelta(seconds=step["ttl"]), open_secret
        )
        for _ in range(step["asks"])
    ]
    ending = [side.leases[i % len(side.leases)] for i in step["releases"] if side.leases]
    if step["unknown_release"]:
        ending.append("lease_0000000000000000000000")
    releases = {(side.org_id, project): ending} if ending else {}
    answers, released = await side.store.lease_batch(
        asks, releases, now, random.Random(step["seed"])
    )
    seen: list[Any] = []
    for answer in answers:
        if isinstance(answer, Lease):
            side.leases.append(answer.id)
            seen.append(
                (
                    "lease",
                    side.seen(answer.credential),
                    answer.secret,
                    answer.created_at,
                    answer.expires_at,
                )
            )
        elif isinstance(answer, Choice):
            assert answer.record is None
            seen.append(("refused", answer.refusal, answer.retry_after, answer.reasons))
        else:
            seen.append(("error", type(answer).__name__, str(answer)))
    ended = sorted(
        (side.leases.index(lease_id), side.seen(record)) for lease_id, record in released.items()
    )
    return seen, ended


async def _state(db: Db, side: _Side, now: datetime) -> Any:
    rows = [await db.vault.get_credential(side.org_id, cid) for cid in side.credentials]
    live = await side.store.live_leases(side.credentials, now)
    return (
        [side.seen(record) for record in rows if record is not None],
        [live.get(cid, 0) for cid in side.credentials],
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    credentials=st.lists(_CREDENTIAL, min_size=1, max_size=4),
    steps=st.lists(_STEP, min_size=1, max_size=6),
)
def test_one_trip_batches_equal_the_reference_path(
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    credentials: list[dict[str, Any]],
    steps: list[dict[str, Any]],
) -> None:
    path = tmp_path_factory.mktemp("example") / "vault.db"
    shutil.copyfile(template, path)

    async def run() -> None:
        db = Db.from_url(f"sqlite+aiosqlite:///{path}")
        try:
            one_trip = SqlVaultStore(db.unit, db.tenancy)
            reference = SqlVaultStore(db.unit, db.tenancy, one_trip=False)
            lean = await _side(db, one_trip, "a", credentials, NOW)
            plain = await _side(db, reference, "b", credentials, NOW)
            now = NOW
            for step in steps:
                now += timedelta(seconds=step["advance"])
                assert await _step(lean, step, now) == await _step(plain, step, now), step
                assert await _state(db, lean, now) == await _state(db, plain, now)
        finally:
            await db.close()

    asyncio.run(run())
