"""Reading the audit log: filters, periods, cursors and masking, as pure functions.

The audit log itself (the hash chain, what is recorded) is written by ``store/audit.py``; this
module holds the rules of reading it that need no I/O, so the API, the CLI and the exporter
apply the same ones:

- an event-type filter is a stable dotted name (``key.revoked``) or a prefix ending in ``.*``
  (``key.*`` is every ``key.`` action, ``vault.*`` every vault one);
- a period preset (``last_quarter``, ``last_7_days``, ...) is a half-open UTC interval
  ``[start, end)`` computed from "now";
- a page cursor is opaque to clients; it carries the seq of the last entry shown;
- ``include_pii=false`` masks addresses to their network and drops user agents.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from keyplane.domain import ids

#: The most values one repeatable filter may hold (``event_types``, ``key_id``, ``actor``).
MAX_FILTER_VALUES = 20
#: Entries in one page of ``GET /v1/audit``.
MAX_PAGE = 200
#: Outcomes an entry can have (``domain/changes.py``).
OUTCOMES = ("success", "failure", "denied")

_ACTION = re.compile(r"[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){0,3}")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{4,32}")
_CURSOR_TAG = "a1:"
_OCTET = re.compile(r"25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d")

#: The presets a period may be given as. Calendar presets are whole UTC calendar units.
PERIODS = (
    "today",
    "yesterday",
    "last_24_hours",
    "last_7_days",
    "last_30_days",
    "last_90_days",
    "this_month",
    "last_month",
    "this_quarter",
    "last_quarter",
    "this_year",
    "last_year",
)


@dataclass(frozen=True, slots=True)
class ActionFilter:
    """Exact action names and ``prefix.`` prefixes; both empty means every action."""

    names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()


def action_filter(
    values: tuple[str, ...] | list[str], limit: int = MAX_FILTER_VALUES
) -> ActionFilter:
    """Parse event-type filters (``key.revoked``, ``key.*``, ``*``); ValueError on a bad one.

    ``*`` alone matches everything. A prefix keeps its dot (``key.*`` -> ``key.``) so that
    ``key.*`` does not match ``keyring.x``.
    """
    if len(values) > limit:
        raise ValueError(f"at most {limit} event types")
    names: list[str] = []
    prefixes: list[str] = []
    for value in values:
        if value == "*":
            return ActionFilter()
        if value.endswith(".*") and _ACTION.fullmatch(value[:-2]):
            prefixes.append(value[:-1])
        elif _ACTION.fullmatch(value):
            names.append(value)
        else:
            raise ValueError(
                "an event type is a dotted name such as key.revoked, or a prefix such as key.*"
            )
    return ActionFilter(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(prefixes)))


def check_ids(values: tuple[str, ...] | list[str], what: str, *, system: bool = False) -> None:
    """ValueError unless each value is an object id (or ``system``/``root`` for actors)."""
    if len(values) > MAX_FILTER_VALUES:
        raise ValueError(f"at most {MAX_FILTER_VALUES} values of {what}")
    for value in values:
        if system and value in ("system", "root"):
            continue
        if len(value) > 40 or not ids.ID_PATTERN.fullmatch(value):
            raise ValueError(f"{what} must be an object id such as key_...")


def check_outcomes(values: tuple[str, ...] | list[str]) -> None:
    for value in values:
        if value not in OUTCOMES:
            raise ValueError("outcome is one of " + ", ".join(OUTCOMES))


def period(preset: str, now: datetime) -> tuple[datetime, datetime]:
    """The half-open UTC interval ``[start, end)`` a preset names at ``now``.

    ``last_7_days`` (and the other ``last_N_...``) end at ``now``; ``last_month``,
    ``last_quarter`` and ``last_year`` are the previous whole calendar unit; ``this_...``
    run from the start of the current unit to ``now``.
    """
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rolling = {
        "last_24_hours": timedelta(hours=24),
        "last_7_days": timedelta(days=7),
        "last_30_days": timedelta(days=30),
        "last_90_days": timedelta(days=90),
    }
    if preset in rolling:
        return now - rolling[preset], now
    if preset == "today":
        return midnight, now
    if preset == "yesterday":
        return midnight - timedelta(days=1), midnight
    month_start = midnight.replace(day=1)
    quarter_start = month_start.replace(month=(now.month - 1) // 3 * 3 + 1)
    year_start = month_start.replace(month=1)
    if preset == "this_month":
        return month_start, now
    if preset == "last_month":
        return _add_months(month_start, -1), month_start
    if preset == "this_quarter":
        return quarter_start, now
    if preset == "last_quarter":
        return _add_months(quarter_start, -3), quarter_start
    if preset == "this_year":
        return year_start, now
    if preset == "last_year":
        return year_start.replace(year=year_start.year - 1), year_start
    raise ValueError("period is one of " + ", ".join(PERIODS))


def _add_months(first_of_month: datetime, months: int) -> datetime:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return first_of_month.replace(year=index // 12, month=index % 12 + 1)


def end_of(value: date | datetime) -> datetime:
    """An end bound: a datetime as itself (UTC assumed when naive), a bare date as the start
    of the next day, so ``end=2024-01-31`` includes the whole of January 31."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC) + timedelta(days=1)


def start_of(value: date | datetime) -> datetime:
    """A start bound: a datetime as itself (UTC assumed when naive), a date as its midnight."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def encode_cursor(seq: int) -> str:
    """An opaque cursor for the page after the entry ``seq`` (newest first)."""
    raw = f"{_CURSOR_TAG}{seq}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The seq a cursor carries; ValueError when it is not one this module made."""
    if not _CURSOR.fullmatch(cursor):
        raise ValueError("not a cursor of this listing")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor of this listing") from None
    digits = raw.removeprefix(_CURSOR_TAG)
    if digits == raw or not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise ValueError("not a cursor of this listing")
    seq = int(digits)
    if encode_cursor(seq) != cursor:  # one spelling per cursor (no leading zeros, spare bits)
        raise ValueError("not a cursor of this listing")
    return seq


@functools.lru_cache(maxsize=4096)  # an export meets the same few addresses again and again
def mask_ip(address: str | None) -> str | None:
    """The network an address belongs to (IPv4 /24, IPv6 /48), never the address itself.

    Enough to tell offices and providers apart in an export that leaves the building; a value
    that is not an address is dropped rather than passed on.
    """
    if address is None:
        return None
    octets = address.split(".")
    if len(octets) == 4 and all(_OCTET.fullmatch(octet) for octet in octets):
        return f"{octets[0]}.{octets[1]}.{octets[2]}.0/24"  # the common case, without parsing
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
