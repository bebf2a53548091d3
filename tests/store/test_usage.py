"""The ``UsageStore`` contract (``db.usage``): the ledger, its rollups, budget alerts and the
limiter's durable windows, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta

import pytest

from keyplane.domain import ids, money
from keyplane.domain.changes import SYSTEM, Journal
from keyplane.domain.usage import AlertSpec, CreditAdjustment, UsageEntry, bucket_starts
from keyplane.errors import ConflictError, StorageError
from keyplane.store.database import Database as Db
from tests.store.conftest import NOW, key_record, other_tenancy, tenancy


async def _key(db: Db, org_id: str | None = None, project_id: str | None = None) -> str:
    if org_id is None or project_id is None:
        org_id, project_id = await tenancy(db)
    record = await db.keys.create(key_record(org_id, project_id))
    return record.id


def _entry(
    key_id: str,
    org_id: str,
    idempotency_key: str,
    cost: int = 1_000,
    *,
    model: str | None = "gpt",
    fingerprint: str = "f" * 64,
    at: object = NOW,
    tokens: tuple[int, int] = (10, 20),
    alert: AlertSpec | None = None,
) -> UsageEntry:
    return UsageEntry(
        id=ids.new_id("use"),
        org_id=org_id,
        key_id=key_id,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        request_id=None,
        model=model,
        cost_micros=cost,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        latency_ms=5,
        status=200,
        recorded_at=at,  # type: ignore[arg-type]
        alert=alert,
    )


async def test_a_report_is_counted_once_and_a_repeat_answers_as_the_original(db: Db) -> None:
    org, _ = await tenancy(db)
    key = await _key(db)
    first = _entry(key, org, "idem-1", 1_500)
    [recorded] = await db.usage.record([first])
    assert (recorded.event_id, recorded.new, recorded.conflict) == (first.id, True, False)
    again = _entry(key, org, "idem-1", 1_500)
    [repeat] = await db.usage.record([again])
    assert (repeat.event_id, repeat.new, repeat.conflict) == (first.id, False, False)
    other_body = _entry(key, org, "idem-1", 9, fingerprint="0" * 64)
    [clash] = await db.usage.record([other_body])
    assert (clash.event_id, clash.new, clash.conflict) == (first.id, False, True)
    assert (await db.usage.totals([key], NOW))[key] == {
        "total": 1_500,
        "hour": 1_500,
        "day": 1_500,
        "week": 1_500,
        "month": 1_500,
    }


async def test_an_idempotency_key_is_scoped_to_its_api_key(db: Db) -> None:
    org, project = await tenancy(db)
    other_org, other_project = await other_tenancy(db)
    mine, theirs = await _key(db, org, project), await _key(db, other_org, other_project)
    [a] = await db.usage.record([_entry(mine, org, "same", 100)])
    [b] = await db.usage.record([_entry(theirs, other_org, "same", 200)])
    assert a.new and b.new and a.event_id != b.event_id
    totals = await db.usage.totals([mine, theirs], NOW)
    assert (totals[mine]["total"], totals[theirs]["total"]) == (100, 200)


async def test_concurrent_identical_reports_are_counted_once(db: Db) -> None:
    org, _ = await tenancy(db)
    key = await _key(db)
    answers = await asyncio.gather(
        *(db.usage.record([_entry(key, org, "racing", 700)]) for _ in range(8))
    )
    outcomes = [answer[0] for answer in answers]
    assert sum(o.new for o in outcomes) == 1
    assert len({o.event_id for o in outcomes}) == 1
    assert (await db.usage.totals([key], NOW))[key]["total"] == 700


async def test_batches_repeating_each_others_reports_in_another_order_do_not_deadlock(
    db: Db,
) -> None:
    # Clients retry reports through other instances, batched in whatever order they arrive.
    # Two batches inserting the same idempotency keys in opposite orders would each wait for
    # the other's uncommitted row (a PostgreSQL deadlock, one batch failed) unless the
    # ledger inserts them in one order.
    org, _ = await tenancy(db)
    key = await _key(db)
    names = [f"idem-{i:03}" for i in range(200)]
    for _ in range(3):
        forward = [_entry(key, org, name, 1) for name in names]
        backward = [_entry(key, org, name, 1) for name in reversed(names)]
        answers = await asyncio.gather(db.usage.record(forward), db.usage.record(backward))
        assert sum(o.new for answer in answers for o in answer) == len(names)
        names = [f"{name}-again" for name in names]
    assert (await db.usage.totals([key], NOW))[key]["total"] == 3 * 200


async def test_a_batch_answers_each_report_in_order(db: Db) -> None:
    org, _ = await tenancy(db)
    key = await _key(db)
    batch = [_entry(key, org, "a", 1), _entry(key, org, "b", 2), _entry(key, org, "a", 1)]
    outcomes = await db.usage.record(batch)
    assert [o.new for o in outcomes] == [True, True, False]
    assert outcomes[2].event_id == batch[0].id
    assert await db.usage.record([]) == []
    assert (await db.usage.totals([key], NOW))[key]["total"] == 3


async def test_totals_cover_only_the_current_buckets(db: Db) -> None:
    org, _ = await tenancy(db)
    key = await _key(db)
    last_month = NOW - timedelta(days=40)
    await db.usage.record([_entry(key, org, "old", 5_000, at=last_month)])
    await db.usage.record([_entry(key, org, "new", 7, at=NOW)])
    totals = await db.usage.totals([key, "key_unknown"], NOW)
    assert totals[key] == {"total": 5_007, "hour": 7, "day": 7, "week": 7, "month": 7}
    assert totals["key_unknown"] == {"total": 0, "hour": 0, "day": 0, "week": 0, "month": 0}
    assert await db.usage.totals([], NOW) == {}


async def test_before_commit_sees_only_the_new_reports(db: Db) -> None:
    org, _ = await tenancy(db)
    key = await _key(db)
    await db.usage.record([_entry(key, org, "seen-before", 1)])
    seen: list[Sequence[UsageEntry]] = []

    async def before_commit(added: Sequence[UsageEntry]) -> None:
        seen.append(added)

    fresh = _entry(key, org, "fresh", 2)
    await db.usage.record([_entry(key, org, "seen-before", 1), fresh], before_commit)
    assert [[e.id for e in batch] for batch in seen] == [[fresh.id]]


async def test_a_batch_rolled_back_before_its_commit_leaves_nothing(db: Db) -> None:
    # On PostgreSQL the ledger's writes go on asyncpg's connection, not SQLAlchemy's
    # (store/postgres_ledger.py): they must be inside the transaction, not commit on their own.
    org, _ = await tenancy(db)
    key = await _key(db)

    async def before_commit(added: Sequence[UsageEntry]) -> None:
        raise RuntimeError("the caller gives up")

    with pytest.raises(RuntimeError):
        await db.usage.record([_entry(key, org, "lost", 5)], before_commit)
    assert (await db.usage.totals([key], NOW))[key] == dict.fromkeys(bucket_starts(NOW), 0)
    [again] = await db.usage.record([_entry(key, org, "lost", 5)])
    assert again.new  # the ledger did not keep the first attempt either
    assert (await db.usage.totals([key], NOW))[key]["total"] == 5


async def test_a_report_for_a_key_that_is_not_there_is_a_conflict(db: Db) -> None:
    org, _ = await tenancy(db)
    with pytest.raises(ConflictError):
        await db.usage.record([_entry("key_never_made", org, "orphan", 5)])


async def test_a_report_past_the_ledger_maximum_is_not_recorded(db: Db) -> None:
    org, _ = await tenancy(db)
    key = await _key(db)
    [big] = await db.usage.record([_entry(key, org, "big", money.LEDGER_MAX - 10)])
    [over] = await db.usage.record([_entry(key, org, "over", 11)])
    [fits] = await db.usage.record([_entry(key, org, "fits", 10)])
    assert big.new and fits.new
    assert over.overflow and not over.new
    assert (await db.usage.totals([key], NOW))[key]["total"] == money.LEDGER_MAX
    # Not in the ledger: a retry is judged afresh (and overflows again).
    [retry] = await db.usage.record([_entry(key, org, "over", 11)])
    assert retry.overflow


async def test_seed_spent_reads_the_bucket_by_model(db: Db) -> None:
    org, _ = await tenancy(db)
    key = await _key(db)
    await db.usage.record([_entry(key, org, "1", 100, model="gpt")])
    await db.usage.record([_entry(key, org, "2", 30, model="claude")])
    await db.usage.record([_entry(key, org, "3", 5, model=None)])
    installed: list[dict[str, int]] = []

    async def install(spent: dict[str, int]) -> None:
        installed.append(spent)

    await db.usage.seed_spent(key, "day", bucket_starts(NOW)["day"], install)
    assert installed == [{"": 135, "gpt": 100, "claude": 30}]
    # A bucket nobody spent in seeds as zero.
    await db.usage.seed_spent(key, "day", bucket_starts(NOW)["day"] + timedelta(days=1), install)
    assert installed[-1] == {"": 0}


async def test_a_report_waits_for_a_seed_in_progress(db: Db) -> None:
    """While ``install`` runs no report of that key and bucket commits, so the seed's read
    and the report's increment never both count (nor both miss) it."""
    org, _ = await tenancy(db)
    key = await _key(db)
    installing, release = asyncio.Event(), asyncio.Event()
    seeded: list[dict[str, int]] = []
    order: list[str] = []

    async def install(spent: dict[str, int]) -> None:
        seeded.append(spent)
        installing.set()
        await release.wait()

    async def report() -> None:
        await installing.wait()
        await db.usage.record([_entry(key, org, "during", 40)])
        order.append("report committed")

    seed = asyncio.ensure_future(
        db.usage.seed_spent(key, "day", bucket_starts(NOW)["day"], install)
    )
    racing = asyncio.ensure_future(report())
    await installing.wait()
    for _ in range(20):  # every chance to commit early, which it must not take
        await asyncio.sleep(0)
    order.append("seed released")
    release.set()
    await asyncio.gather(seed, racing)
    assert seeded == [{"": 0}]
    assert order == ["seed released", "report committed"]
    assert (await db.usage.totals([key], NOW))[key]["day"] == 40


async def test_crossed_budget_thresholds_become_events_once(db: Db) -> None:
    org, project = await tenancy(db)
    key = await _key(db, org, project)
    start = bucket_starts(NOW)["month"]
    alert = AlertSpec("monthly", "month", start, limit_micros=1_000, thresholds_bp=(5_000, 9_000))
    await db.usage.record([_entry(key, org, "a", 600, alert=alert)])
    await db.usage.record([_entry(key, org, "a", 600, alert=alert)])  # a repeat: no new event
    await db.usage.record([_entry(key, org, "b", 350, alert=alert)])
    events = await db.events.list_page(org, None, 10)
    assert [e["type"] for e in events] == ["budget.threshold_crossed"] * 2
    assert [e["payload"]["threshold"] for e in events] == [0.5, 0.9]
    assert [e["payload"]["spent_micros"] for e in events] == [600, 950]
    assert all(e["subject_id"] == key and e["org_id"] == org for e in events)


async def test_limit_windows_keep_the_latest_end_of_each_window(db: Db) -> None:
    await db.usage.keep_limit_windows({("key_1", "rate:a"): 500, ("key_1", "rate:b"): 7})
    await db.usage.keep_limit_windows({("key_1", "rate:a"): 300, ("key_2", "rate:a"): 1})
    await db.usage.keep_limit_windows({})
    seen: list[tuple[int | None, dict[str, int]]] = []

    async def install(promised: int | None, kept: Mapping[str, int]) -> int:
        seen.append((promised, dict(kept)))
        return 1_000 if promised is None else promised - 1  # a shorter promise is ignored

    await db.usage.guard_limit_state("key_1", install)
    await db.usage.guard_limit_state("key_1", install)
    assert seen == [
        (None, {"rate:a": 500, "rate:b": 7}),
        (1_000, {"rate:a": 500, "rate:b": 7}),
    ]


async def test_concurrent_guards_of_one_key_take_turns(db: Db) -> None:
    promises: list[int | None] = []

    async def install(promised: int | None, kept: Mapping[str, int]) -> int:
        promises.append(promised)
        await asyncio.sleep(0)
        return (promised or 0) + 1

    await asyncio.gather(*(db.usage.guard_limit_state("key_9", install) for _ in range(5)))
    # Each renewal saw the one before it: no two read the same promise.
    assert sorted(promises, key=lambda p: -1 if p is None else p) == [None, 1, 2, 3, 4]


async def test_a_credit_adjustment_counts_as_negative_spending_once_under_the_seed_lock(
    db: Db,
) -> None:
    org, _ = await tenancy(db)
    key = await _key(db)
    await db.usage.record([_entry(key, org, "spend", 3_000_000)])
    counted: list[str] = []

    async def before_commit() -> None:
        counted.append("live counters")

    def adjustment(amount: int) -> CreditAdjustment:
        return CreditAdjustment(ids.new_id("adj"), org, key, amount, "goodwill", NOW)

    granted = adjustment(5_000_000)
    await db.usage.adjust_credits(granted, None, Journal(SYSTEM, NOW), before_commit)
    assert counted == ["live counters"]
    totals = (await db.usage.totals([key], NOW))[key]
    assert totals == dict.fromkeys(("total", "hour", "day", "week", "month"), -2_000_000)
    month = bucket_starts(NOW)["month"]
    assert await db.usage.spent_in(key, "month", month) == -2_000_000
    seeded: dict[str, int] = {}

    async def install(costs: dict[str, int]) -> None:
        seeded.update(costs)

    await db.usage.seed_spent(key, "month", month, install)
    assert seeded == {"": -2_000_000, "gpt": 3_000_000}  # per-model rows are not adjusted
    assert await db.usage.get_adjustment(org, granted.id) == granted
    other, _ = await other_tenancy(db)
    assert await db.usage.get_adjustment(other, granted.id) is None
    # Out of the ledger's range: refused, and nothing of it is kept.
    too_much = adjustment(money.MAX_MICROS + 1)  # the rollups would go below -MAX_MICROS
    try:
        await db.usage.adjust_credits(too_much, None, Journal(SYSTEM, NOW), before_commit)
    except ConflictError as exc:
        assert exc.code == "CREDITS_OUT_OF_RANGE"
    else:
        raise AssertionError("an adjustment past LEDGER_MAX was accepted")
    assert await db.usage.get_adjustment(org, too_much.id) is None
    assert counted == ["live counters"]


@pytest.mark.postgres
async def test_a_batch_postgresql_refuses_is_a_storage_error_that_leaves_nothing(
    postgres_db: Db,
) -> None:
    # The ledger's statements go on asyncpg's connection there (store/postgres_ledger.py):
    # a value the column refuses is refused (not cut short by a cast), a driver error still
    # leaves as Keyplane's, and the transaction rolls back whole.
    db = postgres_db
    org, _ = await tenancy(db)
    key = await _key(db)
    fits, too_long = _entry(key, org, "fits", 5), _entry(key, org, "k" * 256, 5)
    with pytest.raises(StorageError):
        await db.usage.record([fits, too_long])  # the column holds 255 characters
    assert (await db.usage.totals([key], NOW))[key]["total"] == 0
    [again] = await db.usage.record([fits])
    assert again.new
