"""Authorization checks shared by the services."""

from __future__ import annotations

from keyplane.domain import scopes
from keyplane.domain.tenancy import Principal
from keyplane.errors import PermissionDeniedError


def require_scope(principal: Principal, scope: str) -> None:
    """Raise PermissionDeniedError unless one of the principal's scopes covers ``scope``."""
    if not scopes.covered_by_any(principal.scopes, scope):
        raise PermissionDeniedError(
            f"this management key lacks the {scope!r} scope", code="MISSING_SCOPE"
        )


def may_read(principal: Principal, scope: str) -> bool:
    """Whether the principal holds the read ``scope`` for what a write of it returns.

    Write does not imply read: a write-only caller is answered without the record.
    """
    return scopes.covered_by_any(principal.scopes, scope)
