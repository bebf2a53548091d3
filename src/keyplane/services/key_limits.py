"""Operators' hands on a key's live limits: resetting rate windows and concurrency slots, and
adjusting its budget with credits (``POST /v1/keys/{id}/limits/reset``, ``.../credits``).

A reset acts on the limiter (memory, or Redis for every instance at once); it changes nothing
durable, so it is audited in a transaction of its own, written before the reset so that no
reset goes unrecorded. A credit adjustment never edits a counter: it is a ledger entry
(``store.usage.adjust_credits``) counted as a spend of minus the amount, and it reaches the
live counters while the ledger rows are locked, exactly as a usage report does, so concurrent
verifies on any instance see it at once and exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keyplane.domain import ids, money
from keyplane.domain.admission import WindowAsk
from keyplane.domain.changes import Journal
from keyplane.domain.clock import Clock
from keyplane.domain.crypto import idempotency_digest
from keyplane.domain.keys import KeyRecord, KeyStatus
from keyplane.domain.tenancy import Principal
from keyplane.domain.usage import CreditAdjustment
from keyplane.errors import ConflictError, NotFoundError, ValidationError
from keyplane.limits.base import Limiter
from keyplane.services.authz import require_scope
from keyplane.services.directory import KeyDirectory
from keyplane.services.keys import Idempotency
from keyplane.store.base import IdempotencyRecord
from keyplane.store.database import Database

#: What an adjustment's reason may hold (the API bounds it first).
MAX_REASON_LENGTH = 500
_ADJUST_CREDITS = "keys.credits"


@dataclass(frozen=True, slots=True)
class LimitsReset:
    """What a reset did."""

    key: KeyRecord
    #: The windows made full again, by name.
    windows: tuple[str, ...]
    #: Whether concurrency slots were freed, and how many were held.
    concurrency: bool
    slots_released: int


@dataclass(frozen=True, slots=True)
class AdjustedCredits:
    adjustment: CreditAdjustment
    #: True when an idempotent retry answered the adjustment an earlier request made.
    replayed: bool = False


class KeyLimits:
    """Resets and credit adjustments of one key's limits."""

    def __init__(
        self, store: Database, directory: KeyDirectory, limiter: Limiter, clock: Clock
    ) -> None:
        self._store = store
        self._directory = directory
        self._limiter = limiter
        self._clock = clock

    async def reset(
        self,
        principal: Principal,
        id_or_hash: str,
        windows: Sequence[str] | None = None,
        concurrency: bool = True,
    ) -> LimitsReset:
        """Make the key's rate and token windows full again (only ``windows`` when named)
        and, when ``concurrency``, free its concurrency slots.

        ``keys:write``: who may disable and enable a key may also lift its rate limits. A
        name the key's policy does not have is refused (422), so a typo never looks done.
        """
        require_scope(principal, "keys:write")
        record = await self._find(principal, id_or_hash)
        entry = await self._directory.by_id(record.id)
        specs = () if entry is None else entry.windows
        if windows is not None:
            known = {spec.name for spec in specs}
            unknown = sorted(set(windows) - known)
            if unknown:
                raise ValidationError(
                    f"the key has no limit window named {unknown[0]!r}", code="UNKNOWN_WINDOW"
                )
            specs = tuple(spec for spec in specs if spec.name in set(windows))
        asks = [WindowAsk(s.name, s.kind, s.window, 0, s.counts) for s in specs]
        names = tuple(dict.fromkeys(spec.name for spec in specs))
        journal = Journal(principal.actor, self._clock.now())
        journal.record_key(
            "key.limits.reset",
            record,
            {"windows": list(names), "concurrency": concurrency},
        )
        # Recorded first: a reset that then fails is in the log as asked for, whereas one
        # that succeeded but was never recorded would be an unaudited change of limits.
        await self._store.audit.record_alone(journal)
        released = await self._limiter.reset(record.id, asks, concurrency)
        return LimitsReset(record, names, concurrency, released)

    async def adjust_credits(
        self,
        principal: Principal,
        id_or_hash: str,
        amount_micros: int,
        reason: str,
        idempotency: Idempotency | None = None,
    ) -> AdjustedCredits:
        """Grant (positive) or charge (negative) credits to the key's budget, as a ledger
        entry. Under an ``Idempotency-Key`` a retry answers the adjustment made first.

        A scope of its own, ``keys:credits``: it moves money, and a dashboard or gateway that
        manages keys (``keys:write``) should not be able to grant itself credit.
        """
        require_scope(principal, "keys:credits")
        if amount_micros == 0 or abs(amount_micros) > money.MAX_MICROS:
            raise ValidationError(
                f"amount must be non-zero and at most {money.MAX_CREDITS} credits either way",
                code="INVALID_AMOUNT",
            )
        if not reason.strip() or len(reason) > MAX_REASON_LENGTH:
            raise ValidationError(f"a reason of 1 to {MAX_REASON_LENGTH} characters is required")
        if idempotency is not None:
            replayed = await self._replay(principal, idempotency)
            if replayed is not None:
                return replayed
        record = await self._find(principal, id_or_hash)
        if record.status is KeyStatus.REVOKED:
            raise ConflictError("cannot adjust the budget of a revoked key", code="KEY_REVOKED")
        now = self._clock.now()
        adjustment = CreditAdjustment(
            id=ids.new_id("adj"),
            org_id=record.org_id,
            key_id=record.id,
            amount_micros=amount_micros,
            reason=reason,
            created_at=now,
        )
        marker = None
        if idempotency is not None:
            marker = IdempotencyRecord(
                org_id=principal.org_id,
                principal_id=principal.key_id,
                key_digest=idempotency_digest(idempotency.key),
                operation=_ADJUST_CREDITS,
                fingerprint=idempotency.fingerprint,
                object_id=adjustment.id,
                created_at=now,
            )
        journal = Journal(principal.actor, now)
        journal.record_key(
            "key.credits.adjusted",
            record,
            {
                "adjustment_id": adjustment.id,
                "amount": money.to_text(amount_micros),
                "reason": reason,
            },
        )

        async def count_in_live_counters() -> None:
            # A credit is a negative spend; model None: the key's own budget only.
            await self._limiter.add_spent(record.id, None, -amount_micros, now)

        try:
            await self._store.usage.adjust_credits(
                adjustment, marker, journal, count_in_live_counters
            )
        except ConflictError as exc:
            if idempotency is None or exc.code == "CREDITS_OUT_OF_RANGE":
                raise
            replayed = await self._replay(principal, idempotency)
            if replayed is None:
                raise
            return replayed
        return AdjustedCredits(adjustment)

    async def _replay(
        self, principal: Principal, idempotency: Idempotency
    ) -> AdjustedCredits | None:
        """The adjustment an earlier request with this Idempotency-Key made, if any."""
        found = await self._store.idempotency.get(
            principal.org_id, principal.key_id, idempotency_digest(idempotency.key)
        )
        if found is None:
            return None
        if found.operation != _ADJUST_CREDITS or found.fingerprint != idempotency.fingerprint:
            raise ConflictError(
                "this Idempotency-Key was already used with a different request",
                code="IDEMPOTENCY_KEY_REUSED",
            )
        adjustment = await self._store.usage.get_adjustment(principal.org_id, found.object_id)
        if adjustment is None:  # pragma: no cover (written in one transaction with its record)
            raise NotFoundError("the adjustment of this Idempotency-Key is gone")
        await self._find(principal, adjustment.key_id)  # still within the caller's reach
        return AdjustedCredits(adjustment, replayed=True)

    async def _find(self, principal: Principal, id_or_hash: str) -> KeyRecord:
        record = await self._store.keys.get(principal.org_id, id_or_hash)
        if record is None or not principal.reaches_project(record.project_id):
            raise NotFoundError(f"no key {id_or_hash!r}", code="KEY_NOT_FOUND")
        return record
