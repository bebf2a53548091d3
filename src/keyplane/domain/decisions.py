"""Verify decisions: a closed set of stable codes and the pure function that picks one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from keyplane.domain import scopes
from keyplane.domain.keys import KeyRecord, KeyStatus, effective_status


class Code(StrEnum):
    """Stable verdict codes; clients switch on these strings, so they never change."""

    VALID = "VALID"
    MALFORMED = "MALFORMED"
    NOT_FOUND = "NOT_FOUND"
    DISABLED = "DISABLED"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    FORBIDDEN_MODEL = "FORBIDDEN_MODEL"
    IP_NOT_ALLOWED = "IP_NOT_ALLOWED"
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"
    USER_AGENT_NOT_ALLOWED = "USER_AGENT_NOT_ALLOWED"
    HTTPS_REQUIRED = "HTTPS_REQUIRED"
    COUNTRY_NOT_ALLOWED = "COUNTRY_NOT_ALLOWED"
    DOMAIN_NOT_ALLOWED = "DOMAIN_NOT_ALLOWED"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    TIMESTAMP_EXPIRED = "TIMESTAMP_EXPIRED"
    NONCE_REUSED = "NONCE_REUSED"
    FEATURE_NOT_ALLOWED = "FEATURE_NOT_ALLOWED"
    OPERATION_NOT_ALLOWED = "OPERATION_NOT_ALLOWED"
    PROVIDER_NOT_ALLOWED = "PROVIDER_NOT_ALLOWED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    CONCURRENCY_EXCEEDED = "CONCURRENCY_EXCEEDED"
    RATE_LIMITED = "RATE_LIMITED"
    TOKEN_LIMITED = "TOKEN_LIMITED"  # noqa: S105 (a code, not a secret)
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    COST_LIMITED = "COST_LIMITED"


_STATUS_CODES = {
    KeyStatus.PENDING: Code.PENDING_APPROVAL,
    KeyStatus.DISABLED: Code.DISABLED,
    KeyStatus.EXPIRED: Code.EXPIRED,
    KeyStatus.REVOKED: Code.REVOKED,
}


def decide(
    record: KeyRecord,
    secret_valid_until: datetime | None,
    required_scopes: Sequence[str],
    now: datetime,
    granted_scopes: Sequence[str] | None = None,
) -> Code:
    """Decide whether a found key may be used now.

    Args:
        record: the key the presented secret belongs to.
        secret_valid_until: end of the rotation grace period when the presented secret is a
            rotated-out one; ``None`` for the current secret.
        required_scopes: scopes the caller needs; each must be covered by one of the key's.
        now: the time of the request (UTC).
        granted_scopes: the scopes that apply (the key's, or its plan's); the key's own
            scopes when not given.

    The order is fixed and documented: secret validity, lifecycle status, then scopes.
    """
    if secret_valid_until is not None and now >= secret_valid_until:
        # A rotated-out secret past its grace period is indistinguishable from an unknown one.
        return Code.NOT_FOUND
    status = effective_status(record, now)
    if status is not KeyStatus.ACTIVE:
        return _STATUS_CODES[status]
    if not required_scopes:
        return Code.VALID  # most verifies ask for no scope: nothing to match
    granted = record.scopes if granted_scopes is None else granted_scopes
    if scopes.missing(granted, required_scopes):
        return Code.INSUFFICIENT_SCOPE
    return Code.VALID
