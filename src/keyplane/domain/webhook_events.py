"""The webhook event catalogue, event filters, payloads and the retry schedule (pure).

The catalogue is the one place an event type is declared: adding an event is one line in
:data:`CATALOGUE` (its name, what it means, an example of its ``data``). The audit log's
``action`` and the webhook event type are the same string (``domain/changes.py``); a journal
change whose action is not in the catalogue is never sent.

A payload is ``{"type", "timestamp", "data"}``; ``data`` holds ids, names, owner, amounts and
reasons, never a secret or a full key (a key appears as its ``start`` and ``end`` only): it is
built from a journal change's details, which the services already keep free of secrets.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyplane.domain.changes import Actor, Change, plain
from keyplane.errors import ValidationError

#: The catalogue's version: bumped when a payload changes shape (added fields do not count).
CATALOGUE_VERSION = "2026-12-01"

#: Most event filters on one endpoint.
MAX_FILTERS = 64
_FILTER = re.compile(r"(?:\*|[a-z_]+(?:\.[a-z_]+)*(?:\.\*)?)")


@dataclass(frozen=True, slots=True)
class EventType:
    """One event: its name, what it tells, and an example of its ``data``."""

    name: str
    description: str
    example: Mapping[str, Any]


_KEY = {"id": "key_01jf3k8r2m9x4v7b6n5c0d1e2f", "start": "kp_live_a1b2", "end": "x9yz"}
_WHO = {"actor": {"type": "management_key", "id": "mk_01jf3k...", "name": "ops"}}

# One line per event. Names are fixed (audit action == webhook type).
CATALOGUE: tuple[EventType, ...] = (
    EventType("key.created", "A key was issued.", {**_KEY, "name": "acme", "owner": "cust_1"}),
    EventType(
        "key.updated",
        "A key's fields changed.",
        {**_KEY, "changes": {"name": {"from": "a", "to": "b"}}},
    ),
    EventType(
        "key.rotated",
        "A key got a new secret; the old one works for a grace period. ``automatic: true``"
        " when a schedule or a leak response rotated it (the secret is then held for a claim,"
        " never sent).",
        {**_KEY, "new": {"start": "kp_live_c3d4", "end": "w8uv"}, "automatic": False},
    ),
    EventType(
        "key.rotation.configured",
        "A key's automatic rotation policy was set.",
        {**_KEY, "next_rotation_at": "2027-01-01T00:00:00+00:00"},
    ),
    EventType(
        "key.rotation.scheduled",
        "A key will be rotated automatically soon (KEYPLANE_ROTATION_NOTICE_HOURS ahead).",
        {**_KEY, "rotates_at": "2027-01-01T00:00:00+00:00", "strategy": "gradual"},
    ),
    EventType(
        "key.rotation.claimed",
        "The new secret of an automatic rotation was claimed (by the operator or the old key).",
        {**_KEY, "claimed_by": "old_key"},
    ),
    EventType(
        "key.rotation.unclaimed",
        "Nobody claimed an automatic rotation's new secret in time; it was erased.",
        {**_KEY, "claim_until": "2027-01-02T00:00:00+00:00", "reason": "scheduled"},
    ),
    EventType("key.disabled", "A key was disabled.", {**_KEY, "reason": "abuse"}),
    EventType("key.enabled", "A disabled key was enabled again.", {**_KEY}),
    EventType(
        "key.approved",
        "A key pending approval was approved by a second management key.",
        {**_KEY, "created_by": "mk_01jf3k..."},
    ),
    EventType(
        "key.rejected",
        "A key pending approval was rejected (revoked for good).",
        {**_KEY, "reason": "not needed"},
    ),
    EventType("key.revoked", "A key was revoked for good.", {**_KEY, "reason": "customer left"}),
    EventType("key.expired", "A key reached its expiry time.", {**_KEY}),
    EventType(
        "key.expiring",
        "A key expires within N days (once per key and N).",
        {**_KEY, "expires_at": "2027-01-01T00:00:00+00:00", "days": 7},
    ),
    EventType("key.auto_enabled", "A key disabled until a time was enabled again.", {**_KEY}),
    EventType("key.replayed", "An idempotent create answered an earlier key.", {**_KEY}),
    EventType("key.imported", "A key was imported.", {**_KEY, "name": "legacy"}),
    EventType(
        "key.limits.reset",
        "An operator reset a key's rate windows and/or concurrency slots.",
        {**_KEY, "windows": ["per_minute"], "concurrency": True},
    ),
    EventType(
        "key.credits.adjusted",
        "An operator granted (positive) or charged (negative) credits to a key's budget.",
        {**_KEY, "adjustment_id": "adj_01jf...", "amount": "25", "reason": "goodwill"},
    ),
    EventType(
        "management_key.created",
        "A management key was created.",
        {"id": "mk_01jf...", "name": "ci"},
    ),
    EventType(
        "management_key.revoked",
        "A management key was revoked.",
        {"id": "mk_01jf...", "name": "ci"},
    ),
    EventType("project.created", "A project was created.", {"id": "proj_01jf...", "name": "web"}),
    EventType("project.updated", "A project changed.", {"id": "proj_01jf...", "changes": {}}),
    EventType(
        "organization.created",
        "An organization was created.",
        {"id": "org_01jf...", "name": "acme"},
    ),
    EventType("plan.created", "A plan was created.", {"id": "plan_01jf...", "name": "pro"}),
    EventType(
        "plan.updated",
        "A plan changed; every key on it follows.",
        {"id": "plan_01jf...", "keys_affected": 12},
    ),
    EventType(
        "plan.rotation.configured",
        "A plan's automatic rotation policy was set; keys on it without their own follow it.",
        {"id": "plan_01jf...", "name": "pro", "rotation": {"max_age_days": 90}},
    ),
    EventType("plan.deleted", "A plan was deleted.", {"id": "plan_01jf...", "name": "pro"}),
    EventType(
        "vault.credential.created",
        "An upstream credential was stored.",
        {"id": "cred_01jf...", "provider": "openai"},
    ),
    EventType(
        "vault.credential.updated", "An upstream credential changed.", {"id": "cred_01jf..."}
    ),
    EventType(
        "vault.credential.disabled",
        "An upstream credential was disabled (by hand or refused by its provider).",
        {"id": "cred_01jf...", "reason": "401 from provider"},
    ),
    EventType(
        "vault.credential.enabled",
        "An upstream credential was enabled again.",
        {"id": "cred_01jf..."},
    ),
    EventType(
        "vault.credential.exhausted",
        "An upstream credential used up its allowance.",
        {"id": "cred_01jf...", "limit": "100"},
    ),
    EventType(
        "vault.credential.revoked", "An upstream credential was revoked.", {"id": "cred_01jf..."}
    ),
    EventType("vault.master_key.rotated", "The vault's master key was rotated.", {"key_id": "mk2"}),
    EventType(
        "budget.threshold_crossed",
        "A key's spending crossed an alert threshold.",
        {**_KEY, "threshold": 80, "spent": "80.5", "limit": "100"},
    ),
    EventType(
        "budget.exhausted",
        "A key's budget is used up for its period.",
        {**_KEY, "spent": "100", "limit": "100"},
    ),
    EventType(
        "rate_limit.exceeded",
        "A key was refused by its rate limits (one per key per minute).",
        {**_KEY, "refused": 42, "minute": "2026-12-01T10:04:00+00:00"},
    ),
    EventType(
        "webhook.endpoint.created",
        "A webhook endpoint was registered.",
        {"id": "whe_01jf...", "url": "https://hooks.example.com/k"},
    ),
    EventType(
        "webhook.endpoint.updated",
        "A webhook endpoint changed.",
        {"id": "whe_01jf...", "changes": {}},
    ),
    EventType("webhook.endpoint.deleted", "A webhook endpoint was deleted.", {"id": "whe_01jf..."}),
    EventType(
        "webhook.endpoint.secret_rotated",
        "An endpoint's signing secret was rotated.",
        {"id": "whe_01jf...", "previous_valid_until": "2026-12-02T10:00:00+00:00"},
    ),
    EventType(
        "webhook.endpoint.disabled",
        "An endpoint failing for too long was disabled.",
        {
            "id": "whe_01jf...",
            "url": "https://hooks.example.com/k",
            "failing_since": "2026-11-28T10:00:00+00:00",
        },
    ),
    EventType(
        "project.leak_response.updated",
        "A project's action for leaked keys changed.",
        {"id": "proj_01jf...", "leak_action": "disable"},
    ),
    EventType(
        "security.key_leaked",
        "A key was reported leaked (secret scanning or an operator); says where, never the key.",
        {
            **_KEY,
            "name": "acme",
            "reporter": "github",
            "url": "https://github.com/acme/app/blob/abc123/config.py",
            "source": "content",
            "action": "revoke",
        },
    ),
    EventType(
        "security.report",
        "The scheduled security report of the organization (counts per issue type).",
        {
            "keys_scanned": 1200,
            "counts": {"dormant_key": 31, "unlimited_key": 1, "stale_key": 0},
            "thresholds": {"dormant_days": 90, "stale_days": 180},
        },
    ),
    EventType(
        "ping", "A test event (POST /v1/webhooks/{id}/test).", {"endpoint_id": "whe_01jf..."}
    ),
)

EVENTS: Mapping[str, EventType] = {event.name: event for event in CATALOGUE}


def check_filters(filters: Sequence[str]) -> tuple[str, ...]:
    """The filters, checked: each an event name, a prefix ending in ``.*`` that names at
    least one event (``key.*``), or ``*``; ValidationError ``UNKNOWN_EVENT_TYPE`` otherwise."""
    if not filters:
        raise ValidationError("events must name at least one event type", code="UNKNOWN_EVENT_TYPE")
    if len(filters) > MAX_FILTERS:
        raise ValidationError(f"at most {MAX_FILTERS} event filters", code="UNKNOWN_EVENT_TYPE")
    kept: list[str] = []
    for name in filters:
        if len(name) > 64 or not _FILTER.fullmatch(name) or not _known(name):
            raise ValidationError(
                f"unknown event type {name[:64]!r} (see docs/webhooks.md)",
                code="UNKNOWN_EVENT_TYPE",
            )
        if name not in kept:
            kept.append(name)
    return tuple(kept)


def _known(name: str) -> bool:
    if name == "*":
        return True
    if name.endswith(".*"):
        prefix = name[:-1]
        return any(event.startswith(prefix) for event in EVENTS)
    return name in EVENTS


def matches(filters: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint with these filters receives ``event_type``.

    ``*`` receives everything but ``ping`` (sent to one endpoint on request only).
    """
    for name in filters:
        if name == event_type:
            return True
        if event_type == "ping":
            continue
        if name == "*" or (name.endswith(".*") and event_type.startswith(name[:-1])):
            return True
    return False


def filters_for(event_type: str) -> list[str]:
    """Every filter that receives ``event_type``: its name, each prefix of it ending in
    ``.*``, and ``*`` (but for ``ping``); the outbox matches endpoints on these in SQL."""
    if event_type == "ping":
        return ["ping"]
    parts = event_type.split(".")
    return [event_type, *(".".join(parts[:end]) + ".*" for end in range(1, len(parts))), "*"]


def payload(change: Change, actor: Actor, at: datetime) -> dict[str, Any]:
    """The JSON body sent for a journal change."""
    data: dict[str, Any] = {
        "object": change.target_type,
        "id": change.target_id,
        "org_id": change.org_id,
        "project_id": change.project_id,
    }
    data.update(plain(dict(change.details)))
    if change.count != 1:
        data["count"] = change.count
    data["actor"] = {"type": actor.kind, "id": actor.id, "name": actor.name}
    return {"type": change.action, "timestamp": at.isoformat(), "data": data}


def encode(body: Mapping[str, Any]) -> str:
    """The exact text sent (and signed): compact JSON, keys in order."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Exponential backoff with jitter, for a bounded time.

    The n-th retry waits ``first * 2**(n-1)`` capped at ``longest``, times a random factor in
    [1 - jitter, 1 + jitter] (so receivers that failed together do not get retried together);
    a delivery older than ``give_up_after`` is not retried again.
    """

    first: timedelta = timedelta(seconds=30)
    longest: timedelta = timedelta(hours=8)
    give_up_after: timedelta = timedelta(days=3)
    jitter: float = 0.2

    def next_attempt(
        self, attempts: int, created_at: datetime, now: datetime, rng: random.Random
    ) -> datetime | None:
        """When to try again after ``attempts`` failed attempts; None to give up."""
        base = self.first * (1 << min(max(attempts - 1, 0), 30))
        delay = min(base, self.longest) * rng.uniform(1 - self.jitter, 1 + self.jitter)
        when = now + delay
        if when - created_at > self.give_up_after:
            return None
        return when
