from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain import scopes


@pytest.mark.parametrize(
    ("held", "wanted", "expected"),
    [
        ("read:*", "read:invoices", True),
        ("read:*", "read:invoices:pdf", True),
        ("read:*", "read", False),
        ("read:*", "write:invoices", False),
        ("*", "anything:at:all", True),
        ("*:read", "keys:read", True),
        ("*:read", "keys:write", False),
        ("*:read", "keys:read:more", False),
        ("keys:read", "keys:read", True),
        ("keys:read", "keys:read:extra", False),
        ("keys:*", "keys:*", True),
        ("keys:read", "keys:*", False),
        ("*", "*", True),
    ],
)
def test_covers(held: str, wanted: str, expected: bool) -> None:
    assert scopes.covers(held, wanted) is expected


def test_missing_lists_uncovered_scopes_in_order() -> None:
    assert scopes.missing(["read:*"], ["read:a", "write:b", "read:c", "admin"]) == [
        "write:b",
        "admin",
    ]
    assert scopes.missing([], []) == []


@pytest.mark.parametrize("scope", ["read", "read:*", "*", "a.b-c_d:e", "keys:read"])
def test_valid_scopes(scope: str) -> None:
    assert scopes.is_valid_scope(scope)


@pytest.mark.parametrize("scope", ["", "Read", "read:", ":read", "a b", "read::x", "x" * 129])
def test_invalid_scopes(scope: str) -> None:
    assert not scopes.is_valid_scope(scope)


_SEGMENT = st.sampled_from(["*", "keys", "read", "write", "verify", "a"])
_SCOPE = st.lists(_SEGMENT, min_size=1, max_size=3).map(":".join)


@given(held=st.lists(_SCOPE, max_size=4), wanted=_SCOPE)
def test_the_remembered_answer_for_a_tuple_is_the_walk_over_its_scopes(
    held: list[str], wanted: str
) -> None:
    expected = any(scopes.covers(pattern, wanted) for pattern in held)
    assert scopes.covered_by_any(tuple(held), wanted) is expected
    assert scopes.covered_by_any(tuple(held), wanted) is expected  # remembered, same answer
    assert scopes.covered_by_any(held, wanted) is expected
