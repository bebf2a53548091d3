"""Budget rollover: what a period's unused allowance carries into the next one.

The rule, in one line (``budget.rollover: {enabled, max_carry}``)::

    carry = min(max_carry, max(0, limit - spent_previous))

- ``limit`` is the budget's *base* limit (``credit_limit``) in force when the carry is
  computed, not the previous period's effective limit: a carry never carries again, so carries
  do not compound (a key idle for a year has at most ``max_carry`` waiting, never twelve
  periods' worth). When the limit changed mid-period, the current one counts.
- ``spent_previous`` is what the ledger holds for the previous period (net of credit
  adjustments made in it), so the carry is derived from durable data only: every instance and
  every restart computes the same number.
- ``max_carry`` defaults to the base limit (at most one period's worth carried).
- A key created during the current period carries nothing (it had no previous period).

The period's effective limit is ``limit + carry``. Budgets that never reset have no carry.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from keyplane.domain.periods import Reset, period_start


def carry(limit: int, max_carry: int, spent_previous: int) -> int:
    """The micro-credits that carry into a period (see the module docstring)."""
    return max(0, min(max_carry, limit - spent_previous))


def previous_period_start(
    reset: Reset, start: datetime, created_at: datetime | None = None
) -> datetime | None:
    """The start of the period before the one starting at ``start``; None for NEVER, and
    for a key created at or after ``start`` (nothing of a previous period to carry)."""
    if reset is Reset.NEVER or (created_at is not None and created_at >= start):
        return None
    return period_start(reset, start - timedelta(microseconds=1))
