"""Credits as integers: one credit is 1,000,000 micro-credits, and all arithmetic is on those.

The API speaks decimal credits (``0.10``); nothing inside ever holds a float amount, so sums
over millions of usage reports are exact.

Every amount that comes from outside goes through :func:`to_micros`, which is bounded before it
computes anything. ``Decimal("9e999992")`` costs nothing to build, but turning it into an
integer writes out a million digits: that blocked the event loop for 8 to 37 s, and
``1e1000000`` overflowed the decimal context into a 500. So the text is capped in length, only
plain ASCII decimal forms are read, and the size of the number is judged from its exponent and
digit count; the integer is built only once it is known to fit.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

MICROS_PER_CREDIT = 1_000_000
#: Decimal places an amount may have: one micro-credit is the smallest unit.
PLACES = 6
#: Largest amount accepted anywhere: a trillion credits, far beyond any real budget, and small
#: enough that sums of many of them stay exact in every database's 64-bit integers.
MAX_CREDITS = 10**12
MAX_MICROS = MAX_CREDITS * MICROS_PER_CREDIT
#: Longest amount accepted, as text or as decimal digits. "1000000000000.000000" is 20
#: characters; the slack allows exponents and trailing zeros without allowing work that grows
#: with the input.
MAX_AMOUNT_LENGTH = 40
#: The most a ledger total (one key's running sum of costs, or of tokens) may reach. Below
#: 2**63 - 1, so PostgreSQL's BIGINT holds it and SQLite never falls back to floating point.
LEDGER_MAX = 9 * 10**18

# ASCII digits only: Decimal() would also take "1_000", " 1", full-width digits, "NaN" and
# "Infinity", none of which is a way anyone writes an amount on purpose.
_DECIMAL_TEXT = re.compile(
    r"(?P<sign>[+-]?)(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?(?:[eE](?P<exponent>[+-]?[0-9]+))?",
    re.ASCII,
)
_NOT_A_NUMBER = 'amounts are numbers of credits, e.g. 12.5 or "0.000001"'
_TOO_LARGE = f"amounts are at most {MAX_CREDITS} credits"
_TOO_PRECISE = f"amounts have at most {PLACES} decimal places"


def to_micros(value: Decimal | int | float | str) -> int:
    """Exact micro-credits for an amount of credits, or ValueError.

    Accepted: integers, finite floats (read through their shortest text, so 0.1 is one
    tenth), finite Decimals, and ASCII decimal text (``"12.5"``, ``"1e3"``) of at most
    ``MAX_AMOUNT_LENGTH`` characters. Refused: more than 6 decimal places, more than
    ``MAX_CREDITS`` either way, NaN and infinities, booleans. The cost of a call is bounded
    whatever the input.
    """
    if isinstance(value, bool):
        raise ValueError(_NOT_A_NUMBER)
    if isinstance(value, int):
        # A comparison, not a multiplication: cheap however many digits the integer has.
        if abs(value) > MAX_CREDITS:
            raise ValueError(_TOO_LARGE)
        return value * MICROS_PER_CREDIT
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(_NOT_A_NUMBER)
        return _from_text(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(_NOT_A_NUMBER)
        sign, digits, exponent = value.as_tuple()
        if len(digits) > MAX_AMOUNT_LENGTH:
            raise ValueError(_TOO_LARGE if value.adjusted() > 0 else _TOO_PRECISE)
        if not isinstance(exponent, int):  # unreachable for a finite Decimal; for mypy
            raise ValueError(_NOT_A_NUMBER)
        return _scaled(-1 if sign else 1, "".join(map(str, digits)), exponent)
    if isinstance(value, str):
        return _from_text(value)
    raise ValueError(_NOT_A_NUMBER)


def _from_text(text: str) -> int:
    if len(text) > MAX_AMOUNT_LENGTH:
        raise ValueError(f"amounts are at most {MAX_AMOUNT_LENGTH} characters")
    match = _DECIMAL_TEXT.fullmatch(text)
    if match is None or not (match["whole"] or match["fraction"]):
        raise ValueError(_NOT_A_NUMBER)
    fraction = match["fraction"] or ""
    # At most 39 digits: int() of it is cheap, and so is everything done with it below.
    exponent = int(match["exponent"] or "0") - len(fraction)
    return _scaled(-1 if match["sign"] == "-" else 1, match["whole"] + fraction, exponent)


def _scaled(sign: int, digits: str, exponent: int) -> int:
    """``sign * int(digits) * 10**exponent`` in micro-credits, judged before it is computed."""
    digits = digits.lstrip("0")
    if not digits:
        return 0
    # The leading digit stands for 10**(exponent + len(digits) - 1) credits.
    if exponent + len(digits) - 1 >= len(str(MAX_CREDITS)):
        raise ValueError(_TOO_LARGE)
    shift = exponent + PLACES
    if shift >= 0:
        micros: int = int(digits) * 10**shift  # shift <= 18 here, by the check above
    else:
        # Digits past the sixth decimal place must all be zero; when there are more places
        # than digits, a non-zero digit is among them.
        kept, dropped = digits[:shift], digits[shift:]
        if -shift > len(digits) or dropped.strip("0"):
            raise ValueError(_TOO_PRECISE)
        micros = int(kept or "0")
    if micros > MAX_MICROS:
        raise ValueError(_TOO_LARGE)
    return sign * micros


def to_decimal(micros: int) -> Decimal:
    """The exact decimal number of credits for an amount of micro-credits."""
    return Decimal(micros).scaleb(-PLACES)


def to_text(micros: int) -> str:
    """The exact decimal text of an amount of micro-credits, always with a decimal point and
    no trailing zeros past the first: ``"0.1"``, ``"50.0"``, ``"999999999999.999999"``.

    This is how the API writes credits, as JSON numbers: every digit of the integer kept, where
    a float would round 999999999999.999999 to 1000000000000.0.
    """
    whole, fraction = divmod(abs(micros), MICROS_PER_CREDIT)
    digits = f"{fraction:0{PLACES}d}".rstrip("0") or "0"
    return f"{'-' if micros < 0 else ''}{whole}.{digits}"


def to_credits(micros: int) -> float:
    """The amount for display in JSON; the shortest float text of an integer of micros / 1e6
    round-trips, so 100000 shows as 0.1."""
    return micros / MICROS_PER_CREDIT
