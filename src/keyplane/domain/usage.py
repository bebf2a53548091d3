"""Usage: the ledger entry a report becomes, the calendar buckets it is summed into, and
budget alert thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyplane.domain.periods import Reset, period_start

#: Rollup bucket for each budget reset; "total" never resets.
BUCKET_OF_RESET = {
    Reset.NEVER: "total",
    Reset.HOURLY: "hour",
    Reset.DAILY: "day",
    Reset.WEEKLY: "week",
    Reset.MONTHLY: "month",
}
BUCKETS = tuple(BUCKET_OF_RESET.items())


def bucket_starts(now: datetime) -> dict[str, datetime]:
    """The start of every bucket that ``now`` falls in, by bucket name."""
    return {bucket: period_start(reset, now) for reset, bucket in BUCKETS}


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """A budget whose alert thresholds a report may cross."""

    reset: str
    bucket: str
    bucket_start: datetime
    limit_micros: int
    thresholds_bp: tuple[int, ...]
    #: The ``costs`` window it watches ("per_hour_max", ...); None for the key's budget.
    window: str | None = None


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One accepted usage report, as the ledger keeps it."""

    id: str
    org_id: str
    key_id: str
    idempotency_key: str
    fingerprint: str
    request_id: str | None
    model: str | None
    cost_micros: int
    input_tokens: int
    output_tokens: int
    latency_ms: int | None
    status: int | None
    recorded_at: datetime
    alert: AlertSpec | None = None
    #: The alerts of the key's ``costs`` windows (one per window with a limit).
    cost_alerts: tuple[AlertSpec, ...] = ()
    #: The feature the request used (a free string, bounded by the API), if reported.
    feature: str | None = None


def alerts_of(entry: UsageEntry) -> tuple[AlertSpec, ...]:
    """Every budget and cost window a report may alert on."""
    return entry.cost_alerts if entry.alert is None else (entry.alert, *entry.cost_alerts)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the ledger did with a report."""

    #: The ledger row: the new one, or the original when this was a retry.
    event_id: str
    recorded_at: datetime
    #: False when the idempotency key had been seen with the same body (counted once).
    new: bool
    #: True when the idempotency key had been seen with a *different* body.
    conflict: bool = False
    #: True when the report would push the key's totals past ``money.LEDGER_MAX``; it was
    #: not recorded.
    overflow: bool = False


def crossed_thresholds(
    before: int, after: int, limit: int, thresholds_bp: tuple[int, ...]
) -> list[int]:
    """Thresholds (basis points of ``limit``) that spending from ``before`` to ``after`` crossed.

    A threshold is crossed when spending reaches it: ``before < limit * t <= after``.
    """
    crossed = []
    for bp in thresholds_bp:
        mark = -(-limit * bp // 10_000)  # the first whole micro-credit at or past the mark
        if before < mark <= after:
            crossed.append(bp)
    return crossed


@dataclass(frozen=True, slots=True)
class CreditAdjustment:
    """Credits an operator granted (``amount_micros`` > 0: more to spend) or charged (< 0) a
    key's budget. The ledger counts it as a spend of ``-amount_micros`` in the periods of
    ``created_at``, for the key's own budget (per-model budgets are not adjusted)."""

    id: str
    org_id: str
    key_id: str
    amount_micros: int
    reason: str
    created_at: datetime
