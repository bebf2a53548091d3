"""Security events (failed authentication, permission denials, verify refusals), counted in
memory and written to the audit log as one entry per (org, action, source) per flush.

These come in floods (a scanner trying keys, a revoked key still deployed in a hot loop): one
entry per occurrence would let an attacker grow the log without bound and put a database write
on the verify path. Instead :meth:`SecurityEvents.note` only increments a counter (no I/O, no
await), and a supervised loop (:meth:`SecurityEvents.run`) writes what was counted every
``interval`` seconds (a minute by default) as entries whose ``count`` says how many occurrences
each stands for.

Bounded: at most ``max_sources`` distinct sources per (org, action) and flush window; the rest
of that window's sources are folded into one entry whose source is :data:`OVERFLOW`. A process
that crashes loses what it counted since its last flush (at most one interval); a clean stop
flushes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from keyplane.domain.changes import DENIED, FAILURE, Actor, Journal, Origin
from keyplane.domain.clock import Clock
from keyplane.errors import KeyplaneError
from keyplane.services.supervisor import uninterrupted

log = logging.getLogger(__name__)

#: The source of an entry that stands for the sources past the cap.
OVERFLOW = "(other sources)"
#: Distinct sources kept per (org, action) in one window, unless told otherwise.
DEFAULT_MAX_SOURCES = 100
#: Distinct reason codes kept per entry (they come from closed sets; this only bounds).
_MAX_CODES = 32

#: The verify codes worth an audit entry: a key that should no longer be used is still in
#: use, or a request came from where the key may not be used.
SECURITY_VERIFY_CODES = frozenset(
    {
        "REVOKED",
        "EXPIRED",
        "DISABLED",
        "IP_NOT_ALLOWED",
        "ORIGIN_NOT_ALLOWED",
        "USER_AGENT_NOT_ALLOWED",
        "COUNTRY_NOT_ALLOWED",
        "DOMAIN_NOT_ALLOWED",
        # A forged or replayed signed request: someone holds the key but not its secret, or
        # captured a request.
        "SIGNATURE_INVALID",
        "NONCE_REUSED",
        "PENDING_APPROVAL",  # a key nobody has approved yet is in use already
    }
)


@dataclass(slots=True)
class _Tally:
    target_type: str
    target_id: str | None
    project_id: str | None
    actor: Actor
    outcome: str
    count: int = 0
    codes: dict[str, int] = field(default_factory=dict)


Writer = Callable[[Sequence[Journal]], Awaitable[None]]


class SecurityEvents:
    """Counts security events in memory; :meth:`flush` writes them as aggregated entries."""

    def __init__(
        self,
        writer: Writer,
        clock: Clock,
        *,
        interval: float = 60.0,
        max_sources: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._interval = interval
        self._max_sources = max_sources
        self._window_start = clock.now()
        self._tallies: dict[tuple[str, str, str], _Tally] = {}
        self._sources: dict[tuple[str, str], int] = {}

    # -- the hot side: counting only ---------------------------------------------------------

    def auth_failed(self, org_id: str, reason: str, origin: Origin) -> None:
        """A management request whose key was missing, malformed, unknown, revoked or expired
        (the token itself is never seen here)."""
        source = origin.ip or "unknown"
        actor = Actor("anonymous", None, None, origin)
        self._note(org_id, "auth.failed", source, "source", source, None, actor, FAILURE, reason)

    def permission_denied(self, org_id: str, actor: Actor, scope_code: str) -> None:
        """A management key refused for lack of a scope (403)."""
        key_id = actor.id or "unknown"
        self._note(
            org_id,
            "permission.denied",
            key_id,
            "management_key",
            key_id,
            None,
            actor,
            DENIED,
            scope_code,
        )

    def verify_refused(
        self, org_id: str, project_id: str, key_id: str, code: str, actor: Actor
    ) -> None:
        """A verify refused for one of :data:`SECURITY_VERIFY_CODES` (callers filter)."""
        self._note(org_id, "verify.refused", key_id, "key", key_id, project_id, actor, DENIED, code)

    def _note(
        self,
        org_id: str,
        action: str,
        source: str,
        target_type: str,
        target_id: str | None,
        project_id: str | None,
        actor: Actor,
        outcome: str,
        code: str,
    ) -> None:
        key = (org_id, action, source)
        tally = self._tallies.get(key)
        if tally is None:
            seen = self._sources.get((org_id, action), 0)
            if seen >= self._max_sources:
                key = (org_id, action, OVERFLOW)
                tally = self._tallies.get(key)
                if tally is None:
                    tally = self._tallies[key] = _Tally(
                        target_type, None, None, Actor("anonymous"), outcome
                    )
            else:
                self._sources[(org_id, action)] = seen + 1
                tally = self._tallies[key] = _Tally(
                    target_type, target_id, project_id, actor, outcome
                )
        tally.count += 1
        if code in tally.codes or len(tally.codes) < _MAX_CODES:
            tally.codes[code] = tally.codes.get(code, 0) + 1

    # -- the cold side: writing ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many distinct entries the next flush would write."""
        return len(self._tallies)

    async def flush(self) -> int:
        """Write what was counted since the last flush; returns how many entries.

        When the write fails, the counts are kept for the next flush (merged with what comes
        in meanwhile, still bounded by the caps)."""
        tallies, self._tallies, self._sources = self._tallies, {}, {}
        start, end = self._window_start, self._clock.now()
        self._window_start = end
        if not tallies:
            return 0
        journals = []
        for (org_id, action, source), tally in tallies.items():
            journal = Journal(tally.actor, end)
            journal.record(
                action,
                org_id=org_id,
                target_type=tally.target_type,
                target_id=tally.target_id,
                project_id=tally.project_id,
                outcome=tally.outcome,
                count=tally.count,
                details={
                    "source": source,
                    "codes": tally.codes,
                    "window_start": start,
                    "window_end": end,
                },
            )
            journals.append(journal)
        try:
            await self._writer(journals)
        except BaseException:
            self._restore(tallies, start)
            raise
        return len(journals)

    def _restore(self, tallies: dict[tuple[str, str, str], _Tally], start: datetime) -> None:
        for key, tally in tallies.items():
            current = self._tallies.get(key)
            if current is None:
                org_id, action, _ = key
                self._tallies[key] = tally
                self._sources[(org_id, action)] = self._sources.get((org_id, action), 0) + 1
            else:
                current.count += tally.count
                for code, n in tally.codes.items():
                    current.codes[code] = current.codes.get(code, 0) + n
        self._window_start = min(self._window_start, start)

    async def run(self) -> None:
        """Flush every ``interval`` seconds (the supervised loop)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await uninterrupted(self.flush())
            except KeyplaneError as exc:
                log.warning("writing security events failed: %s", type(exc).__name__)
