"""The API key record and its lifecycle states."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from keyplane.domain.frozen import fast_init


class KeyStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    EXPIRED = "expired"
    REVOKED = "revoked"
    #: Created under a policy that requires approval; usable once another manager approves.
    PENDING = "pending"


class Environment(StrEnum):
    LIVE = "live"
    TEST = "test"


# Built on every cached key's unpacking (services/key_pack.py) and every row read.
@fast_init
@dataclass(frozen=True, slots=True)
class KeyRecord:
    """Everything Keyplane knows about an API key, except its secret (which it never keeps).

    ``status`` is the stored status; :func:`effective_status` folds in expiry and automatic
    re-enabling, which depend on the time of asking, not on a background job having run.
    """

    id: str
    org_id: str
    project_id: str
    hash: str
    start: str
    end: str
    name: str
    environment: Environment
    created_at: datetime
    updated_at: datetime
    status: KeyStatus = KeyStatus.ACTIVE
    label: str | None = None
    description: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    disabled_reason: str | None = None
    auto_enable_at: datetime | None = None
    revoked_reason: str | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    plan_id: str | None = None
    #: The key's own policy (storage form): overrides merged over its plan's.
    policy: dict[str, Any] = field(default_factory=dict)
    #: The management key that created it (``None`` for keys made before this was kept).
    created_by: str | None = None


def effective_status(record: KeyRecord, now: datetime) -> KeyStatus:
    """The status that applies at ``now``.

    Revocation is final and wins over everything; expiry wins over disabling (an expired key
    stays expired when its disable period ends); a disabled key whose ``auto_enable_at`` has
    passed is active again at exactly that instant.
    """
    if record.status is KeyStatus.REVOKED:
        return KeyStatus.REVOKED
    if record.expires_at is not None and now >= record.expires_at:
        return KeyStatus.EXPIRED
    if record.status is KeyStatus.DISABLED:
        if record.auto_enable_at is not None and now >= record.auto_enable_at:
            return KeyStatus.ACTIVE
        return KeyStatus.DISABLED
    return record.status
