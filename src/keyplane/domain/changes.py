"""What happened, who did it, from where: the change journal every write records into.

A service that changes something (a key revoked, a plan edited, a credential added) records a
:class:`Change` in a :class:`Journal` and hands the journal to the store method that makes the
change. The store's unit of work (``store/unit.py``) gives the journal's changes to its journal
writers (the audit log, the webhook outbox) inside the same transaction, just before it
commits: no change without its entries, no entry without its change.

Actions are stable dotted names (``key.created``, ``key.revoked``, ``plan.updated``): the
audit log's ``action`` and the webhook event type are the same string. Details never hold a
secret, a full key or a credential: the services put ids, names, reasons and diffs there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from keyplane.domain.frozen import fast_init

if TYPE_CHECKING:
    from keyplane.domain.keys import KeyRecord

#: Outcomes of a recorded action.
SUCCESS = "success"
FAILURE = "failure"
DENIED = "denied"

#: Longest user agent kept (it comes from the caller).
MAX_USER_AGENT = 512
#: A request id the caller sent is kept only in this shape.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# Built on every authenticated request: an __init__ without object.__setattr__.
@fast_init
@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, as far as the server can tell (all bounded, may be None)."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None, request_id: str | None) -> Origin:
        """An origin from raw request values: the user agent truncated and made printable,
        a request id kept only when it is a plain token (it comes from the caller)."""
        if user_agent is not None:
            user_agent = user_agent[:MAX_USER_AGENT]
            if not user_agent.isprintable():
                user_agent = "".join(c if c.isprintable() else "?" for c in user_agent)
        if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
            request_id = None
        return cls(ip, user_agent, request_id)


#: Nothing known of where a request came from (embedded use, jobs).
NOWHERE = Origin()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: a management key (id and name), the system (a job), or nobody known."""

    kind: str
    id: str | None = None
    name: str | None = None
    origin: Origin = NOWHERE


#: The actor of scheduled and automatic actions (expiry, auto-enable, retention, rotation).
SYSTEM = Actor("system", "system", "system")


def _frozen(details: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(plain(details or {}))


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded action on one target."""

    action: str
    org_id: str
    target_type: str
    target_id: str | None
    project_id: str | None = None
    outcome: str = SUCCESS
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: How many occurrences this entry stands for (aggregated security events); 1 otherwise.
    count: int = 1
    #: False for notifications that are not actions (``budget.threshold_crossed``): the
    #: webhook outbox sends them, the audit log leaves them out.
    audited: bool = True


@dataclass(slots=True)
class Journal:
    """The changes one transaction makes, with who made them and when.

    Filled by the service (often from inside the store's mutation function, where the locked
    current record is known), read by the journal writers at commit.
    """

    actor: Actor
    at: datetime
    changes: list[Change] = field(default_factory=list)

    def record(
        self,
        action: str,
        *,
        org_id: str,
        target_type: str,
        target_id: str | None,
        project_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        outcome: str = SUCCESS,
        count: int = 1,
        audited: bool = True,
    ) -> Change:
        change = Change(
            action,
            org_id,
            target_type,
            target_id,
            project_id,
            outcome,
            _frozen(details),
            count,
            audited,
        )
        self.changes.append(change)
        return change

    def record_key(
        self,
        action: str,
        key: KeyRecord,
        details: Mapping[str, Any] | None = None,
        *,
        audited: bool = True,
    ) -> Change:
        """A change to an API key: its org, project and id as the target, its name first in
        the details (every ``key.*`` entry and event names the key it is about)."""
        return self.record(
            action,
            org_id=key.org_id,
            target_type="key",
            target_id=key.id,
            project_id=key.project_id,
            details={"name": key.name, **(details or {})},
            audited=audited,
        )

    def discard(self) -> None:
        """Forget what was recorded (a mutation that turned out to change nothing)."""
        self.changes.clear()


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"from": old, "to": new}}`` for every field whose value differs, in JSON
    form (see :func:`plain`)."""
    return {
        name: {"from": plain(before.get(name)), "to": plain(after.get(name))}
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: times as ISO 8601, enums as their value, tuples as lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return value
