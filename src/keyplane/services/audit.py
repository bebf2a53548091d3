"""The audit log's use cases on the writing side: chain verification, retention, and the
events nobody triggers (a key's expiry, the end of its disable period).

Management actions are recorded by the services that make them (a journal handed to the store,
written in the change's transaction by ``store/audit.py``); security events are counted by
``services/security_events.py``. See docs/audit.md.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from keyplane.domain import audit, ids
from keyplane.domain.audit import ChainVerifier, Verification
from keyplane.domain.changes import SYSTEM, Journal
from keyplane.domain.clock import Clock
from keyplane.domain.tenancy import Principal
from keyplane.errors import KeyplaneError
from keyplane.services.authz import require_scope
from keyplane.services.supervisor import uninterrupted
from keyplane.store.audit import SqlAuditStore

log = logging.getLogger(__name__)

#: How far back the due-event loop looks for expiries and auto-enables it may have missed
#: (while every instance was down), unless retention is shorter.
DUE_LOOKBACK = timedelta(days=30)
#: Due events recorded per pass, at most (the next pass takes the rest).
DUE_BATCH = 500


class AuditService:
    """Verifies an organization's chain; prunes by retention; records due key events."""

    def __init__(
        self,
        store: SqlAuditStore,
        key: bytes,
        clock: Clock,
        retention: timedelta | None = None,
    ) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self._retention = retention

    async def verify(self, principal: Principal) -> Verification:
        """Verify the caller's organization's chain from its latest checkpoint; needs
        ``audit:read``. Reads in pages: constant memory for any length."""
        require_scope(principal, "audit:read")
        org_id = principal.org_id
        result = await self._verify_once(org_id)
        if not result.ok and result.first_broken is not None:
            # Retention may have pruned between our read of the checkpoint and of the
            # entries; a gap it left is not tampering. Read again from the new checkpoint.
            checkpoint = await self._store.checkpoint(org_id)
            if checkpoint != result.checkpoint:
                result = await self._verify_once(org_id)
        return result

    async def _verify_once(self, org_id: str) -> Verification:
        # The head first: entries appended after it are checked too, and still verify.
        head = await self._store.head(org_id)
        checkpoint = await self._store.checkpoint(org_id)
        verifier = ChainVerifier(self._key, checkpoint, head)
        after = 0 if checkpoint is None else checkpoint.seq
        async for entry in self._store.entries(org_id, after):
            if not verifier.feed(entry):
                break
        return verifier.finish()

    async def prune(self) -> int:
        """Delete entries older than the retention period (none when it is unset), leaving a
        checkpoint per organization. Returns how many were deleted (0 when another instance
        is pruning)."""
        if self._retention is None:
            return 0
        now = self._clock.now()
        return await self._store.prune(now - self._retention, now)

    async def record_due(self) -> int:
        """Record ``key.expired`` and ``key.auto_enabled`` for keys whose time came, as the
        system, once per key and due time whichever instance notices first (the entry id is
        derived from them). Returns how many were written."""
        now = self._clock.now()
        lookback = DUE_LOOKBACK if self._retention is None else min(DUE_LOOKBACK, self._retention)
        written = 0
        for event in await self._store.due_key_events(now - lookback, now, DUE_BATCH):
            journal = Journal(SYSTEM, now)
            journal.record(
                event.action,
                org_id=event.org_id,
                target_type="key",
                target_id=event.key_id,
                project_id=event.project_id,
                details={"name": event.name, "due_at": event.due_at},
            )
            due_ms = int(event.due_at.timestamp() * 1000)
            seed = f"{event.key_id}|{event.action}|{audit.timestamp(event.due_at)}".encode()
            if await self._store.record_once(journal, ids.derived_id("aud", due_ms, seed)):
                written += 1
        return written

    async def run_due(self, interval: float = 30.0) -> None:
        """The due-event loop (supervised)."""
        while True:
            try:
                await uninterrupted(self.record_due())
            except KeyplaneError as exc:
                log.warning("recording due key events failed: %s", type(exc).__name__)
            await asyncio.sleep(interval)

    async def run_retention(self, interval: float = 3600.0) -> None:
        """The retention loop (supervised); hourly by default."""
        while True:
            try:
                await uninterrupted(self.prune())
            except KeyplaneError as exc:
                log.warning("audit retention failed: %s", type(exc).__name__)
            await asyncio.sleep(interval)


def retention_of(days: int | None) -> timedelta | None:
    """The retention period ``KEYPLANE_AUDIT_RETENTION_DAYS`` names (None: keep forever)."""
    return None if days is None else timedelta(days=days)
