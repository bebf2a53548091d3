"""Organizations, projects and management keys: who owns what, and who may manage it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyplane.domain.changes import NOWHERE, Actor, Origin
from keyplane.domain.frozen import fast_init

#: Scopes a management key can hold. ``*`` (or ``keys:*`` and so on) covers them by pattern.
MANAGEMENT_SCOPES = (
    "audit:read",
    "keys:credits",
    "keys:approve",
    "jobs:read",
    "keys:leaked",
    "keys:read",
    "keys:write",
    "management_keys:read",
    "management_keys:write",
    "plans:read",
    "plans:write",
    "projects:read",
    "projects:write",
    "reports:read",
    "signing_secrets:read",
    "signing_secrets:write",
    "usage:read",
    "usage:write",
    "vault:lease",
    "vault:read",
    "vault:write",
    "verify",
    "webhooks:read",
    "webhooks:write",
)


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    org_id: str
    name: str
    key_prefix: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ManagementKeyRecord:
    """A management key (the seeds' "provisioning key"). Its secret is never stored."""

    id: str
    org_id: str
    project_id: str | None
    hash: str
    start: str
    end: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


# Built on every authenticated request: an __init__ without object.__setattr__.
@fast_init
@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of the management API.

    ``project_id`` set means the caller only reaches that project; ``None`` means the whole org.
    """

    key_id: str
    org_id: str
    project_id: str | None
    scopes: tuple[str, ...]
    is_root: bool = False
    #: The management key's name, for the audit log.
    name: str | None = None
    #: Where this request came from (the API sets it; None in embedded use).
    origin: Origin = NOWHERE

    def reaches_project(self, project_id: str) -> bool:
        return self.project_id is None or self.project_id == project_id

    @property
    def actor(self) -> Actor:
        """This caller as the actor of the changes it makes."""
        return Actor("management_key", self.key_id, self.name, self.origin)
