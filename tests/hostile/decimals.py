"""Hostile decimal amounts: the shapes of credit values that froze or broke the server.

``Decimal("1e200000")`` is cheap to hold and ruinous to convert: turning it into an integer
writes out 200,000 digits, and the event loop stood still for 8 s on ``/v1/verify`` (37 s for
``X-Keyplane-Cost: 9e999992`` on ``/v1/auth``); ``1e1000000`` overflowed the decimal context
into a 500. ``domain.money.to_micros`` now bounds every amount before converting it.

Three families, because amounts reach the server in three ways:

- ``TEXT``: strings, in a JSON body (``"cost": "1e200000"``) or a header (``X-Keyplane-Cost``).
- ``JSON_NUMBERS``: raw JSON number literals, sent as body text, so the server's JSON parser
  sees them as written (Python reads ``1e200000`` as ``inf`` and refuses integers of more than
  4300 digits).
- ``JSON_NUMBERS_READ_AS_ZERO``: literals that a JSON parser reads as an IEEE double of zero
  (``-0.0``, ``1e-999999``). The server never sees the text; accepting them as 0 is fine,
  refusing them is fine, a 5xx is not.

Every surface that takes an amount gets every shape (``tests/hostile/test_decimals.py``): a new
surface gets a row in its ``SURFACES`` and is covered.
"""

from __future__ import annotations

#: Strings that must be refused (4xx) wherever an amount is accepted.
TEXT: tuple[str, ...] = (
    # Huge or tiny exponents: cheap to write, ruinous to expand.
    "1e200000",
    "9e999992",
    "1e1000000",
    "-1e-999999",
    "1e-999999",
    "1E+99999999999999999999999999999999",
    "1e-99999999999999999999999999999999",
    # Huge by digits: ten thousand characters.
    "1" + "0" * 10_000,
    "0." + "0" * 10_000 + "1",
    # Not finite.
    "NaN",
    "sNaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "inf",
    # Forms Decimal() accepts but nobody writes an amount in.
    "0x10",
    "1_000",
    " 1",
    "1 ",
    "\t1",
    "\uff11",  # full-width digit one
    "\u0663",  # Arabic-Indic digit three
    "1e",
    "e5",
    ".",
    "",
    "--1",
    "1.2.3",
    "1,5",
    # Past the largest amount (a trillion credits) or the ledger's unit (6 decimal places).
    "1e13",
    "1000000000001",
    "1000000000000.000001",
    "0.0000001",
    "1e-7",
    "1.0000001",
    # Negative.
    "-1",
    "-0.000001",
)

#: JSON number literals that must be refused (4xx).
JSON_NUMBERS: tuple[str, ...] = (
    "1e200000",  # read as inf
    "9e999992",
    "-1e200000",
    "1e308",
    "1.7976931348623157e308",
    "1e13",
    "1000000000001",
    "1" + "0" * 4000,  # an integer Python's JSON parser still reads
    "1" + "0" * 10_000,  # past its 4300-digit limit
    "NaN",  # Python's JSON parser reads these non-standard literals
    "Infinity",
    "-Infinity",
    "1.0000001",
    "0.1234567",
    "-1",
    "-0.5",
    "true",
)

#: JSON number literals that may be read as 0 (they are, as doubles), never a 5xx.
JSON_NUMBERS_READ_AS_ZERO: tuple[str, ...] = (
    "-0",
    "-0.0",
    "1e-999999",
    "-1e-999999",
    "0e999999",
)

#: Amounts that must keep working, as JSON values, with the micro-credits they mean.
VALID: tuple[tuple[object, int], ...] = (
    (0, 0),
    ("0", 0),
    (0.1, 100_000),
    ("0.10", 100_000),
    ("12.5", 12_500_000),
    ("0.000001", 1),
    ("1e3", 1_000_000_000),
    ("1.0000000", 1_000_000),
    (10**12, 10**18),
    ("1000000000000.000000", 10**18),
)
