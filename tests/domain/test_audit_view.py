"""Reading rules of the audit log: event-type filters, period presets, cursors, masking."""

from __future__ import annotations

import ipaddress
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain import audit_view


def test_event_types_are_names_or_dotted_prefixes() -> None:
    parsed = audit_view.action_filter(["key.revoked", "vault.*", "key.revoked", "management_key.*"])
    assert parsed.names == ("key.revoked",)
    assert parsed.prefixes == ("vault.", "management_key.")
    assert audit_view.action_filter(["key.*", "*"]) == audit_view.ActionFilter()


@pytest.mark.parametrize(
    "bad", ["", "Key.created", "key.", "key..x", "key.%", "key_*", "a" * 40, "key.*.*", "k\x00"]
)
def test_malformed_event_types_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="event type"):
        audit_view.action_filter([bad])


def test_filters_are_bounded_in_count() -> None:
    with pytest.raises(ValueError, match="at most"):
        audit_view.action_filter(["key.created"] * (audit_view.MAX_FILTER_VALUES + 1))
    with pytest.raises(ValueError, match="at most"):
        audit_view.check_ids(["key_" + "0" * 26] * 21, "key_id")
    audit_view.check_ids(["system", "root"], "actor", system=True)
    with pytest.raises(ValueError):
        audit_view.check_ids(["system"], "key_id")
    with pytest.raises(ValueError):
        audit_view.check_outcomes(["maybe"])


NOW = datetime(2026, 5, 15, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("preset", "start", "end"),
    [
        ("today", datetime(2026, 5, 15, tzinfo=UTC), NOW),
        ("yesterday", datetime(2026, 5, 14, tzinfo=UTC), datetime(2026, 5, 15, tzinfo=UTC)),
        ("last_7_days", datetime(2026, 5, 8, 10, 30, tzinfo=UTC), NOW),
        ("this_month", datetime(2026, 5, 1, tzinfo=UTC), NOW),
        ("last_month", datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)),
        ("this_quarter", datetime(2026, 4, 1, tzinfo=UTC), NOW),
        ("last_quarter", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
        ("last_year", datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_period_presets(preset: str, start: datetime, end: datetime) -> None:
    assert audit_view.period(preset, NOW) == (start, end)


def test_calendar_presets_cross_year_ends() -> None:
    january = datetime(2026, 1, 10, tzinfo=UTC)
    assert audit_view.period("last_month", january) == (
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert audit_view.period("last_quarter", january) == (
        datetime(2025, 10, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="period is one of"):
        audit_view.period("last_fortnight", january)


def test_a_date_as_end_includes_that_whole_day() -> None:
    assert audit_view.end_of(date(2024, 1, 31)) == datetime(2024, 2, 1, tzinfo=UTC)
    assert audit_view.start_of(date(2024, 1, 1)) == datetime(2024, 1, 1, tzinfo=UTC)
    naive = datetime(2024, 1, 1, 5)
    assert audit_view.start_of(naive) == datetime(2024, 1, 1, 5, tzinfo=UTC)


@given(st.integers(min_value=0, max_value=10**17))
def test_cursors_round_trip(seq: int) -> None:
    assert audit_view.decode_cursor(audit_view.encode_cursor(seq)) == seq


@given(st.text(max_size=40))
def test_garbage_cursors_are_refused_not_crashed_on(text: str) -> None:
    try:
        seq = audit_view.decode_cursor(text)
    except ValueError:
        return
    assert audit_view.encode_cursor(seq) == text


def test_only_the_canonical_spelling_of_a_cursor_is_accepted() -> None:
    cursor = audit_view.encode_cursor(5)
    assert cursor == "YTE6NQ"
    for other in ("YTE6NR", "YTE6NQ==", "YTE6MDU"):  # spare bits, padding, "a1:05"
        with pytest.raises(ValueError):
            audit_view.decode_cursor(other)


def test_masking_keeps_the_network_only() -> None:
    assert audit_view.mask_ip("203.0.113.7") == "203.0.113.0/24"
    assert audit_view.mask_ip("10.0.0.255") == "10.0.0.0/24"
    assert audit_view.mask_ip("256.1.1.1") is None
    assert audit_view.mask_ip("01.2.3.4") is None
    assert "203.0.113.7" not in str(audit_view.mask_ip("::ffff:203.0.113.7"))
    assert audit_view.mask_ip("2001:db8:abcd:12::1") == "2001:db8:abcd::/48"
    assert audit_view.mask_ip("not an address") is None
    assert audit_view.mask_ip(None) is None


@given(st.ip_addresses(v=4))
def test_the_fast_ipv4_path_agrees_with_ipaddress(address: object) -> None:
    assert audit_view.mask_ip(str(address)) == str(
        ipaddress.ip_network(f"{address}/24", strict=False)
    )
