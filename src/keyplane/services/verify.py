"""The data-plane hot path: may this key be used now, for this request?

The order of checks is fixed (see docs/policy.md): key shape, key lookup, rotation grace and
lifecycle status, scopes, signature and its timestamp, model, HTTPS, IP, country, origin and
referrer, domain, user agent, the nonce's single use; then, only when all of those pass,
concurrency, rate windows, token windows and budgets in one atomic step that consumes them all
or none.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from keyplane.domain import gcra, ids, keyformat, money, request_signing
from keyplane.domain.admission import (
    Admission,
    BudgetAsk,
    LimitState,
    WindowAsk,
    WindowKind,
    cost_scope,
)
from keyplane.domain.clock import Clock
from keyplane.domain.crypto import KeyedSha256
from keyplane.domain.decisions import Code, decide
from keyplane.domain.frozen import fast_init
from keyplane.domain.keys import KeyRecord
from keyplane.domain.periods import CurrentPeriods, Reset, period_start
from keyplane.domain.policy import (
    DAY,
    Costs,
    Policy,
    RequestContext,
    check_costs,
    check_request,
    effective_scopes,
)
from keyplane.domain.tenancy import Principal
from keyplane.limits.base import Limiter
from keyplane.limits.nonces import MemoryNonces, NonceStore
from keyplane.limits.queue import SlotQueue, admit_queued
from keyplane.metrics import LIMITER_ADMIT
from keyplane.services.analytics import VerdictRecorder
from keyplane.services.authz import require_scope
from keyplane.services.cache import MISSING
from keyplane.services.carry import CarryBook
from keyplane.services.directory import KeyDirectory, KeyEntry, WindowSpec
from keyplane.services.geoip import GeoIp
from keyplane.services.identity_cache import IdentityCache
from keyplane.services.last_used import LastUsedRecorder
from keyplane.services.security_events import SECURITY_VERIFY_CODES, SecurityEvents

#: The context of a request that names none: frozen, so one instance serves every request.
_NO_CONTEXT = RequestContext()


@fast_init
@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """What the gateway asks about; everything but the key is optional."""

    key: str
    scopes: Sequence[str] = ()
    context: RequestContext = _NO_CONTEXT
    request_id: str | None = None
    #: Pre-authorised credits, in micro-credits.
    cost: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    acquire_concurrency: bool = False
    #: With ``acquire_concurrency``: how long to wait, queued, for a slot (0: refuse at once).
    wait_ms: int = 0


#: A refusal's directives: none. Shared, as a policy's own are shared by all its verdicts:
#: nothing that reads a verdict changes them.
_NO_DIRECTIVES: Mapping[str, Any] = {}


class Verdict(NamedTuple):
    """The answer to a verify. A named tuple, not a frozen dataclass: one is made per verify,
    and a tuple is made in half the time (immutable all the same)."""

    code: Code
    record: KeyRecord | None = None
    plan: str | None = None
    request_id: str | None = None
    limits: tuple[LimitState, ...] = ()
    retry_after: float | None = None
    #: The scopes that applied: the key's own, or its plan's.
    scopes: tuple[str, ...] = ()
    #: What the gateway must do itself (``Policy.directives``), on a VALID verdict.
    directives: Mapping[str, Any] = _NO_DIRECTIVES
    #: The presented secret was rotated out and verifies in its grace period only: the
    #: gateway or SDK should switch to the new one (``POST /v1/self/rotation/claim``).
    rotation_pending: bool = False

    @property
    def valid(self) -> bool:
        return self.code is Code.VALID


_CODE_TEXT = {code: code.value for code in Code}
_MALFORMED = Verdict(Code.MALFORMED)
_NOT_FOUND = Verdict(Code.NOT_FOUND)


class Verifier:
    """Parse, hash, look up (cached), decide, limit, and note the use; no synchronous writes."""

    def __init__(
        self,
        directory: KeyDirectory,
        clock: Clock,
        server_secret: bytes,
        last_used: LastUsedRecorder,
        limiter: Limiter,
        hold_for: timedelta,
        outcomes: VerdictRecorder | None = None,
        security: SecurityEvents | None = None,
        carry_book: CarryBook | None = None,
        nonces: NonceStore | None = None,
        geoip: GeoIp | None = None,
        queue: SlotQueue | None = None,
    ) -> None:
        #: Where verifies that may wait (``wait_ms``) queue for a concurrency slot.
        self._queue = queue
        self._directory = directory
        #: Budget rollover's carries (None: rollover is ignored, e.g. in unit tests).
        self._carry_book = carry_book
        self._nonces = nonces if nonces is not None else MemoryNonces(clock)
        self._geoip = geoip
        self._security = security
        self._clock = clock
        self._keyed = KeyedSha256(server_secret)
        self._last_used = last_used
        self._limiter = limiter
        self._hold_for = hold_for
        self._outcomes = outcomes
        #: The current hour, day and month, for the cost windows.
        self._periods = CurrentPeriods()
        self._cost_windows = CostWindowAsks(self._periods)
        self._window_asks = WindowAsks()
        #: Request ids, in order, without fresh randomness for each (ids.Sequence).
        self._request_ids = ids.Sequence("req")
        #: Verdicts given, by code: a plain count on the hot path, which the runtime's
        #: sampler adds to the ``keyplane_verify_total`` counter (on every scrape, and every
        #: few seconds), as it does the key cache's hits.
        self.verdicts: dict[str, int] = dict.fromkeys((code.value for code in Code), 0)
        #: Told of every refusal of a known key (the runtime's ``RefusalTally``: memory only).
        self.on_refused: Callable[[KeyRecord, Code, datetime], None] | None = None

    async def verify(self, principal: Principal, request: VerifyRequest) -> Verdict:
        """Decide on ``request`` for ``principal``, which must hold the ``verify`` scope.

        Raises:
            PermissionDeniedError: the caller lacks ``verify`` (nothing is looked up then).
        """
        # The authoritative check: the route and the forward-auth gateway refuse earlier with
        # the same function, but a caller in this process (integrations, the library) may not
        # come through them.
        require_scope(principal, "verify")
        # One clock read per verify: the decision, the limits and the outcome counts all
        # take the time the request came in.
        now = self._clock.now()
        verdict = await self._verify(principal, request, now)
        # The code's text without Enum's ``value`` property (a descriptor call per verify).
        code = _CODE_TEXT[verdict.code]
        self.verdicts[code] += 1
        record = verdict.record
        if record is not None:
            if self._outcomes is not None:
                # Counted in memory, flushed in batches: the hot path writes nothing.
                self._outcomes.record(record.id, code, now)
            if verdict.code is not Code.VALID:
                if self.on_refused is not None:
                    self.on_refused(record, verdict.code, now)
                if self._security is not None and code in SECURITY_VERIFY_CODES:
                    # A counter increment only: the audit entry is written later, aggregated.
                    self._security.verify_refused(
                        record.org_id, record.project_id, record.id, code, principal.actor
                    )
        return verdict

    async def _verify(self, principal: Principal, request: VerifyRequest, now: datetime) -> Verdict:
        kind = keyformat.kind_of(request.key)
        if kind is None:
            return _MALFORMED  # shape or checksum wrong: no storage access at all
        if not kind.is_api_key:
            return _NOT_FOUND  # management keys never pass verify
        # The key's hash (crypto.key_digest), raw: the cache keeps hashes as their bytes.
        digest = self._keyed.digest(request.key.encode("utf-8"))
        entry = self._directory.cached_by_digest(digest)
        if entry is MISSING:
            entry = await self._directory.by_hash(digest.hex())
        if entry is None:
            return _NOT_FOUND
        match = entry.match
        record = match.record
        # Another org's key, or a project the caller can't reach, is indistinguishable from
        # an unknown one: verify must not become an oracle across tenants.
        if record.org_id != principal.org_id or not principal.reaches_project(record.project_id):
            return _NOT_FOUND
        policy = entry.policy
        granted = effective_scopes(record.scopes, policy)
        code = decide(record, match.valid_until, request.scopes, now, granted)
        if code is Code.NOT_FOUND:
            return _NOT_FOUND
        plan = match.plan_name
        request_id = request.request_id or self._request_ids.next()
        # A key with no rules and no limits (most keys): nothing to check, nothing to admit.
        unrestricted = policy.unrestricted
        if code is Code.VALID and not unrestricted:
            code = await self._check_request(entry, request, now)
        if code is not Code.VALID:
            return Verdict(code, record, plan, request_id, scopes=granted)
        # Most budgets carry nothing over: no coroutine to make and await for them.
        budget = policy.budget
        carry = (
            None if budget is None or budget.max_carry is None else await self._carry(entry, now)
        )
        admission = (
            None if unrestricted else self._admission(entry, request, request_id, now, carry)
        )
        pending = match.valid_until is not None
        if admission is None:
            self._last_used.record(record.id, now)
            return Verdict(
                Code.VALID,
                record,
                plan,
                request_id,
                scopes=granted,
                directives=policy.directives,
                rotation_pending=pending,
            )
        started = time.perf_counter()
        if admission.max_parallel is not None and policy.max_queued and self._queue is not None:
            # Queued concurrency: first come first served, even for those that do not wait.
            result = await admit_queued(
                self._limiter,
                self._queue,
                admission,
                self._clock.now,
                policy.max_queued,
                request.wait_ms / 1000,
            )
        else:
            result = await self._limiter.admit(admission, now)
        LIMITER_ADMIT.observe(time.perf_counter() - started)
        if result.refusal is not None:
            return Verdict(
                result.refusal,
                record,
                plan,
                request_id,
                result.limits,
                result.retry_after,
                granted,
            )
        self._last_used.record(record.id, now)
        return Verdict(
            Code.VALID,
            record,
            plan,
            request_id,
            result.limits,
            scopes=granted,
            directives=policy.directives,
            rotation_pending=pending,
        )

    async def _carry(self, entry: KeyEntry, now: datetime) -> int | None:
        """What the key's budget carries into this period; None without rollover."""
        budget = entry.policy.budget
        if (
            self._carry_book is None
            or budget is None
            or budget.max_carry is None
            or budget.credit_limit is None
        ):
            return None
        start = period_start(budget.reset, now)
        return await self._carry_book.carry(
            entry.record.id,
            entry.record.created_at,
            budget.reset,
            start,
            budget.credit_limit,
            budget.max_carry,
        )

    async def _check_request(self, entry: KeyEntry, request: VerifyRequest, now: datetime) -> Code:
        """Signature, then the request rules and per-request cost caps, then (only if all pass)
        the nonce's one use."""
        policy = entry.policy
        context = request.context
        if (
            policy.network.has_countries
            and context.country is None
            and context.ip is not None
            and self._geoip is not None
        ):
            context = dataclasses.replace(context, country=self._geoip.country(context.ip))
        rule = policy.signing
        seconds = int(now.timestamp())
        if rule is not None:
            refused = request_signing.check(rule, entry.signing_secret, context.signed, seconds)
            if refused is not None:
                return refused
        code = check_request(policy, context) or check_costs(
            policy, context.model, request.cost, request.tokens_in + request.tokens_out
        )
        if code is not None:
            return code
        signed = context.signed
        if rule is not None and signed is not None and signed.nonce is not None:
            # Claimed last: a request refused for another reason does not use its nonce up.
            ttl = request_signing.nonce_lifetime(rule, signed, seconds)
            if not await self._nonces.claim(entry.record.id, signed.nonce, ttl):
                return Code.NONCE_REUSED
        return Code.VALID

    def _admission(
        self,
        entry: KeyEntry,
        request: VerifyRequest,
        request_id: str,
        now: datetime,
        carry: int | None = None,
    ) -> Admission | None:
        """What this request asks of the key's limits; ``None`` when it has none."""
        policy = entry.policy
        windows = self._window_asks.asks(entry.windows, request.tokens_in, request.tokens_out)
        budgets: list[BudgetAsk] = []
        budget = policy.budget
        if budget is not None:
            # (period_start, next_reset), worked out again only when the period changes.
            start, reset_at = self._periods.bounds(budget.reset, now)
            if budget.credit_limit is not None:
                budgets.append(
                    BudgetAsk(
                        "",
                        # The limiters compare amounts up to MAX_MICROS exactly (Redis: two
                        # limbs of 10^9); a carry never takes a limit past it.
                        min(budget.credit_limit + (carry or 0), money.MAX_MICROS),
                        budget.reset,
                        start,
                        reset_at,
                        request.cost,
                        carry=carry,
                    )
                )
            per_model = budget.model_limit(request.context.model)
            if per_model is not None:
                pattern, limit = per_model
                budgets.append(
                    BudgetAsk(pattern, limit, budget.reset, start, reset_at, request.cost)
                )
        budgets += _cost_asks(policy, request, now, self._periods, self._cost_windows)
        model_limits = policy.model_cost_limit(request.context.model)
        if model_limits is not None and model_limits.max_requests_per_day is not None:
            # Seed 004's day is a calendar day: N requests from one UTC midnight to the next
            # (not a rolling day, which would drip one back every 86400 / N seconds).
            limit = model_limits.max_requests_per_day
            windows += (
                WindowAsk(
                    f"model:{model_limits.pattern}:requests_per_day",
                    WindowKind.RATE,
                    gcra.Window(limit, DAY * gcra.MICROS, limit),
                    1,
                    calendar_day=True,
                ),
            )
        max_parallel = policy.max_parallel if request.acquire_concurrency else None
        if not windows and not budgets and max_parallel is None:
            return None
        return Admission(
            key_id=entry.record.id,
            request_id=request_id,
            hold_until=now + self._hold_for,
            windows=windows,
            max_parallel=max_parallel,
            budgets=tuple(budgets),
            tokens_in=request.tokens_in,
            tokens_out=request.tokens_out,
        )


class WindowAsks:
    """The window asks of a key's windows for a request's token counts, kept per distinct
    windows (shared by every key of one policy) and counts.

    Rate windows always cost 1, and most requests carry no token estimate, or the same
    one: a loaded verify would otherwise build the same six asks again.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._asks: IdentityCache[tuple[WindowSpec, ...], tuple[WindowAsk, ...]] = IdentityCache(
            max_entries
        )

    def asks(
        self, windows: tuple[WindowSpec, ...], tokens_in: int, tokens_out: int
    ) -> tuple[WindowAsk, ...]:
        if not windows:
            return ()
        counts = (tokens_in, tokens_out)
        found = self._asks.get(windows, counts)
        if found is not None:
            return found
        return self._asks.put(windows, counts, window_asks(windows, tokens_in, tokens_out))


def window_asks(
    windows: tuple[WindowSpec, ...], tokens_in: int, tokens_out: int
) -> tuple[WindowAsk, ...]:
    """What a request with these token counts asks of each window (rate windows: 1)."""
    return tuple(
        WindowAsk(
            spec.name,
            spec.kind,
            spec.window,
            _cost_in(spec.counts, tokens_in, tokens_out),
            spec.counts,
        )
        for spec in windows
    )


class CostWindowAsks:
    """The budget asks of a ``costs`` block, kept while every one of its windows is still in
    the same period and the cost estimate is the same as last time.

    A verify on a key with three cost windows would otherwise look up three periods and build
    three asks, the same ones as its previous verify. One entry per block (policies are shared
    by every key of one shape), found by the block's identity; a different cost estimate
    builds afresh and replaces the entry.
    """

    def __init__(self, periods: CurrentPeriods, max_entries: int = 4096) -> None:
        self._periods = periods
        #: costs -> (cost, valid from, valid until or None, the asks)
        self._asks: IdentityCache[
            Costs, tuple[int, datetime, datetime | None, tuple[BudgetAsk, ...]]
        ] = IdentityCache(max_entries)

    def asks(self, costs: Costs, cost: int, now: datetime) -> tuple[BudgetAsk, ...]:
        cached = self._asks.get(costs)
        if cached is not None:
            held_cost, valid_from, valid_until, asks = cached
            if (
                held_cost == cost
                and valid_from <= now
                and (valid_until is None or now < valid_until)
            ):
                return asks
        made = []
        starts = []
        ends = []
        for window in costs.windows:
            start, reset_at = self._periods.bounds(window.reset, now)
            starts.append(start)
            if reset_at is not None:
                ends.append(reset_at)
            made.append(
                BudgetAsk(
                    window.scope,
                    window.limit,
                    window.reset,
                    start,
                    reset_at,
                    cost,
                    Code.COST_LIMITED,
                    window.label,
                )
            )
        asks = tuple(made)
        # Valid while now is in every window's period: from the latest start to the first end.
        self._asks.put(costs, (), (cost, max(starts, default=now), min(ends, default=None), asks))
        return asks


def _cost_asks(
    policy: Policy,
    request: VerifyRequest,
    now: datetime,
    periods: CurrentPeriods,
    windows: CostWindowAsks,
) -> list[BudgetAsk]:
    """The budgets of ``costs``' calendar windows and of the model's ``max_cost_per_day``,
    refused as ``COST_LIMITED``; each has its own counter, seeded from the ledger."""
    asks: list[BudgetAsk] = []
    if policy.costs is not None and policy.costs.windows:
        asks += windows.asks(policy.costs, request.cost, now)
    limits = policy.model_cost_limit(request.context.model)
    if limits is not None and limits.max_cost_per_day is not None:
        start, reset_at = periods.bounds(Reset.DAILY, now)
        asks.append(
            BudgetAsk(
                cost_scope(Reset.DAILY, limits.pattern),
                limits.max_cost_per_day,
                Reset.DAILY,
                start,
                reset_at,
                request.cost,
                Code.COST_LIMITED,
                f"models.cost_limits:{limits.pattern}",
            )
        )
    return asks


def _cost_in(counts: str | None, tokens_in: int, tokens_out: int) -> int:
    if counts is None:
        return 1  # a rate window counts requests
    if counts == "input":
        return tokens_in
    if counts == "output":
        return tokens_out
    return tokens_in + tokens_out
