from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.decisions import Code, decide
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus, effective_status

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RECORD = KeyRecord(
    id="key_x",
    org_id="org_x",
    project_id="proj_x",
    hash="h",
    start="kp_live_abcd",
    end="wxyz",
    name="k",
    environment=Environment.LIVE,
    created_at=NOW,
    updated_at=NOW,
    scopes=("read:*",),
)


def at(**changes: object) -> KeyRecord:
    return dataclasses.replace(RECORD, **changes)  # type: ignore[arg-type]


def test_active_key_is_valid() -> None:
    assert decide(RECORD, None, [], NOW) is Code.VALID
    assert decide(RECORD, None, ["read:invoices"], NOW) is Code.VALID


def test_missing_scope_is_insufficient() -> None:
    assert decide(RECORD, None, ["write:invoices"], NOW) is Code.INSUFFICIENT_SCOPE


def test_expiry_is_exact_at_the_boundary() -> None:
    record = at(expires_at=NOW)
    assert decide(record, None, [], NOW - timedelta(microseconds=1)) is Code.VALID
    assert decide(record, None, [], NOW) is Code.EXPIRED


def test_grace_secret_valid_until_exact_boundary() -> None:
    assert decide(RECORD, NOW, [], NOW - timedelta(microseconds=1)) is Code.VALID
    assert decide(RECORD, NOW, [], NOW) is Code.NOT_FOUND


def test_disabled_then_auto_enabled_at_exact_instant() -> None:
    record = at(status=KeyStatus.DISABLED, auto_enable_at=NOW)
    assert decide(record, None, [], NOW - timedelta(seconds=1)) is Code.DISABLED
    assert decide(record, None, [], NOW) is Code.VALID
    assert decide(at(status=KeyStatus.DISABLED), None, [], NOW + timedelta(days=999)) is (
        Code.DISABLED
    )


def test_revocation_wins_over_everything() -> None:
    record = at(status=KeyStatus.REVOKED, expires_at=NOW - timedelta(days=1))
    assert decide(record, None, [], NOW) is Code.REVOKED


def test_expiry_wins_over_disabled() -> None:
    record = at(status=KeyStatus.DISABLED, expires_at=NOW - timedelta(seconds=1))
    assert effective_status(record, NOW) is KeyStatus.EXPIRED


@given(
    st.sampled_from(list(KeyStatus)),
    st.one_of(st.none(), st.integers(-(10**6), 10**6)),
    st.one_of(st.none(), st.integers(-(10**6), 10**6)),
    st.integers(-(10**6), 10**6),
)
def test_only_active_keys_are_ever_valid(
    status: KeyStatus, expires: int | None, auto_enable: int | None, offset: int
) -> None:
    record = at(
        status=status,
        expires_at=None if expires is None else NOW + timedelta(seconds=expires),
        auto_enable_at=None if auto_enable is None else NOW + timedelta(seconds=auto_enable),
    )
    when = NOW + timedelta(seconds=offset)
    code = decide(record, None, [], when)
    assert (code is Code.VALID) == (effective_status(record, when) is KeyStatus.ACTIVE)
    if status is KeyStatus.REVOKED:
        assert code is Code.REVOKED
