from __future__ import annotations

import pytest

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
