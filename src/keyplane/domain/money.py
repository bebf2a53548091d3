"""Credits as integers: one credit is 1,000,000 micro-credits, and all arithmetic is on those.

The API speaks decimal credits (``0.10``); nothing inside ever holds a float amount, so sums
over millions of usage reports are exact.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS_PER_CREDIT = 1_000_000
#: Largest amount accepted anywhere: a trillion credits, far beyond any real budget, and small
#: enough that sums of many of them stay exact in every database's 64-bit integers.
MAX_MICROS = 10**12 * MICROS_PER_CREDIT


def to_micros(value: Decimal | int | str) -> int:
    """Exact micro-credits for a decimal amount; more than 6 decimal places is an error."""
    if isinstance(value, bool):
        raise ValueError("amounts are numbers of credits")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError("amounts are numbers of credits") from None
    if not amount.is_finite():
        raise ValueError("amounts must be finite")
    micros = amount * MICROS_PER_CREDIT
    if micros != micros.to_integral_value():
        raise ValueError("amounts have at most 6 decimal places")
    result = int(micros)
    if abs(result) > MAX_MICROS:
        raise ValueError("amount too large")
    return result


def to_credits(micros: int) -> float:
    """The amount for display in JSON; the shortest float text of an integer of micros / 1e6
    round-trips, so 100000 shows as 0.1."""
    return micros / MICROS_PER_CREDIT
