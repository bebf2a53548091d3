"""Usage reports: the settling half of the data plane."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from datetime import datetime

from keyplane.domain import ids, keyformat, money
from keyplane.domain.admission import Settlement, WindowAsk
from keyplane.domain.clock import Clock
from keyplane.domain.crypto import key_digest
from keyplane.domain.periods import CurrentPeriods
from keyplane.domain.policy import Policy
from keyplane.domain.tenancy import Principal
from keyplane.domain.usage import BUCKET_OF_RESET, AlertSpec, Recorded, UsageEntry
from keyplane.errors import ConflictError, NotFoundError, ValidationError
from keyplane.limits.base import Limiter
from keyplane.limits.queue import SlotQueue
from keyplane.services.authz import require_scope
from keyplane.services.directory import KeyDirectory, KeyEntry
from keyplane.services.ledger import UsageLedger
from keyplane.services.usage_stream import UsageStreams, event_of


@dataclass(frozen=True, slots=True)
class UsageReport:
    key_id: str | None = None
    key: str | None = None
    request_id: str | None = None
    #: Micro-credits actually spent.
    cost: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    latency_ms: int | None = None
    status: int | None = None
    #: The feature the request used (analytics only; bounded by the API).
    feature: str | None = None


#: A report's fields, in order: what its fingerprint covers.
_REPORT_FIELDS = tuple(field.name for field in fields(UsageReport))
#: ``json.dumps(body, sort_keys=True, separators=(",", ":"))``'s encoder, made once: ``dumps``
#: with arguments makes a new encoder on every call, which cost more than the encoding.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def fingerprint_of(report: UsageReport, key_id: str) -> str:
    """What tells a retried report (same body) from another one under the same idempotency
    key: SHA-256 of the report's fields as sorted JSON, the key named by its id.

    The fields are read one by one: ``dataclasses.asdict`` deep-copies every value, and was
    a sixth of a report's CPU. The stored fingerprints of earlier reports must keep matching.
    """
    body = {name: getattr(report, name) for name in _REPORT_FIELDS}
    body["key"] = None
    body["key_id"] = key_id
    if body["feature"] is None:
        # Absent as before features existed: a retry of an older report still matches.
        del body["feature"]
    return hashlib.sha256(_CANONICAL.encode(body).encode()).hexdigest()


class UsageService:
    def __init__(
        self,
        directory: KeyDirectory,
        ledger: UsageLedger,
        limiter: Limiter,
        clock: Clock,
        server_secret: bytes,
        streams: UsageStreams | None = None,
        queue: SlotQueue | None = None,
    ) -> None:
        #: Told of each slot a report releases, for the verifies queued for one.
        self._queue = queue
        self._directory = directory
        self._ledger = ledger
        self._limiter = limiter
        self._clock = clock
        self._server_secret = server_secret
        #: The live usage stream, handed each durable, new report someone may hear.
        self._streams = streams
        self._periods = CurrentPeriods()

    async def report(
        self, principal: Principal, report: UsageReport, idempotency_key: str | None
    ) -> tuple[Recorded, str]:
        """Record a report exactly once per (API key, idempotency key); return it and the
        key's id.

        The report is durable when this returns. A retry with the same body answers as the
        original; the same idempotency key with another body is a ConflictError. The scope is
        the API key the report names: another key's reports (another tenant's) never collide
        with it, so no answer tells the caller which ids others used, and the settlement that
        follows releases only this key's reservation of ``request_id``.
        """
        require_scope(principal, "usage:write")
        idempotency_key = idempotency_key or report.request_id
        if idempotency_key is None:
            raise ValidationError(
                "give an Idempotency-Key header or a request_id, so a retried report counts once",
                code="IDEMPOTENCY_KEY_REQUIRED",
            )
        entry = await self._key_of(principal, report)
        record = entry.record
        now = self._clock.now()
        fingerprint = fingerprint_of(report, record.id)
        budget = entry.policy.budget
        alert = None
        if budget is not None and budget.credit_limit and budget.alert_thresholds_bp:
            alert = AlertSpec(
                budget.reset.value,
                BUCKET_OF_RESET[budget.reset],
                self._periods.bounds(budget.reset, now)[0],
                budget.credit_limit,
                budget.alert_thresholds_bp,
            )
        recorded = await self._ledger.record(
            UsageEntry(
                id=ids.new_id("use"),
                org_id=record.org_id,
                key_id=record.id,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                request_id=report.request_id,
                model=report.model,
                cost_micros=report.cost,
                input_tokens=report.input_tokens,
                output_tokens=report.output_tokens,
                latency_ms=report.latency_ms,
                status=report.status,
                recorded_at=now,
                alert=alert,
                cost_alerts=_cost_alerts(entry.policy, now, self._periods),
                feature=report.feature,
            )
        )
        if recorded.conflict:
            raise ConflictError(
                "this idempotency key was used for a different report",
                code="IDEMPOTENCY_KEY_REUSED",
            )
        if recorded.overflow:
            raise ConflictError(
                "this report would take the key's all-time totals past "
                f"{money.LEDGER_MAX} micro-credits (or tokens), more than the ledger holds",
                code="USAGE_TOTAL_EXCEEDED",
            )
        streams = self._streams
        if recorded.new and streams is not None and streams.listened_to:
            # Durable by now; a retry that counted nothing is not streamed again.
            streams.publish(event_of(recorded.event_id, record, report, recorded.recorded_at))
        if recorded.new:
            await self._limiter.settle(
                Settlement(
                    key_id=record.id,
                    request_id=report.request_id,
                    input_tokens=report.input_tokens,
                    output_tokens=report.output_tokens,
                    token_windows=tuple(
                        WindowAsk(spec.name, spec.kind, spec.window, 0, spec.counts)
                        for spec in entry.windows
                        if spec.kind == "tokens"
                    ),
                ),
                now,
            )
            if self._queue is not None and entry.policy.max_queued:
                await self._queue.released(record.id)
        return recorded, record.id

    async def _key_of(self, principal: Principal, report: UsageReport) -> KeyEntry:
        if (report.key_id is None) == (report.key is None):
            raise ValidationError("give exactly one of key_id and key", code="KEY_REQUIRED")
        entry: KeyEntry | None = None
        if report.key_id is not None:
            entry = await self._directory.by_id(report.key_id)
        elif report.key is not None and keyformat.parse(report.key) is not None:
            entry = await self._directory.by_hash(key_digest(self._server_secret, report.key))
        if entry is None or (
            entry.record.org_id != principal.org_id
            or not principal.reaches_project(entry.record.project_id)
        ):
            raise NotFoundError("no such key", code="KEY_NOT_FOUND")
        return entry


def _cost_alerts(policy: Policy, now: datetime, periods: CurrentPeriods) -> tuple[AlertSpec, ...]:
    """An alert for each ``costs`` window, when the policy sets ``costs.alert_threshold``."""
    costs = policy.costs
    if costs is None or costs.alert_threshold_bp is None:
        return ()
    return tuple(
        AlertSpec(
            window.reset.value,
            BUCKET_OF_RESET[window.reset],
            periods.bounds(window.reset, now)[0],
            window.limit,
            (costs.alert_threshold_bp,),
            window.name,
        )
        for window in costs.windows
        if window.limit
    )
