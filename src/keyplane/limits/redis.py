"""Limits shared by every instance through Redis: one script call per admission.

:class:`RedisLimiter` has the semantics of :class:`~keyplane.limits.memory.MemoryLimiter`
(all-or-nothing admission, reservations, slots, budgets seeded from the ledger), with its state
in Redis so that any number of instances enforce one set of limits. Each admission is one
``EVALSHA`` of ``lua/admit.lua``: Redis runs a script alone, so the check-and-consume is atomic
across instances. Time is Redis's own (``TIME`` inside the scripts), so instances with skewed
clocks still agree.

Every key of one API key shares the hash tag ``{<key id>}``, so all of them live in one Redis
Cluster slot and every script names all the keys it touches in ``KEYS``::

    <prefix>:{<key id>}:tat:<kind>:<name>:<limit>:<period us>   window debt "t0 u v"; expires
                                                               when the window is full again
    <prefix>:{<key id>}:res        hash: "h:<request id>" -> reservation held,
                                   "l:<request id>" -> token estimate of one that expired
    <prefix>:{<key id>}:exp        zset: request id by hold-until (us)
    <prefix>:{<key id>}:late       zset: request id by when its expired estimate is forgotten
    <prefix>:{<key id>}:slots      concurrency slots held
    <prefix>:{<key id>}:reserved   hash: scope -> micro-credits held by reservations
    <prefix>:{<key id>}:spent:<scope>:<reset>:<period start us>   spent in a budget period,
                                                               from the ledger; a day past
                                                               the period's end it expires
    <prefix>:{<key id>}:scopes     set of the spent counters above ("<scope>:<reset>:<start>")
    <prefix>:{<key id>}:mark       until when (us) this Redis holds the key's long windows and
                                   slots; see keyplane.limits.markers
    <prefix>:{<key id>}:lost       until when (us) slots lost with Redis's data may be in use

The reservation keys expire together once every hold and remembered estimate is over.

Losing Redis's data (long windows and slots: the key's *marker*) is handled in
:mod:`keyplane.limits.markers`; how the scripts stay exact with Lua's doubles is told in
:mod:`keyplane.limits.scripts`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import NoScriptError, RedisError

from keyplane.domain import gcra
from keyplane.domain.admission import (
    Admission,
    AdmissionResult,
    Settlement,
    WindowAsk,
    check_window,
    from_micros,
    judge,
    micros,
    scope_counts,
    window_now_us,
)
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset, next_reset
from keyplane.errors import CountersUnsettledError, LimiterUnavailableError, StorageError
from keyplane.limits.base import CounterSeeder, SingleFlight
from keyplane.limits.keeper import Guard, MemoryGuard, WindowKeeper
from keyplane.limits.markers import LONG_WINDOW_US, AfterLoss, Markers
from keyplane.limits.scripts import (
    MAX_WINDOW_VALUE,
    full_burst_us,
    scripts,
    window_args,
    window_id,
)
from keyplane.metrics import REDIS_ERRORS

log = logging.getLogger(__name__)

# A marker's lifetime is three times this at most, which stays exact in Lua (below 2^53).
_MAX_NEED_US = 2**51
_NEEDS_STATE = 3
# A few rounds: another instance recovering from an outage may drop a counter just seeded.
_SEED_ROUNDS = 5
_NEEDS_SEED = 2
_SEEDED_REMEMBERED = 10_000
_ADMITTED = 1
# Lua's %s: a reservation record is split on these, so scopes cannot hold them.
_LUA_SPACE = re.compile(r"[ \t\n\v\f\r]")
_SCAN_COUNT = 1000


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _wrapping_redis_errors(
    method: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Redis's own errors leave the limiter as LimiterUnavailableError (the driver's as cause)."""

    @functools.wraps(method)
    async def wrapped(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except RedisError as exc:
            REDIS_ERRORS.labels("limiter").inc()
            # The type only: a driver's message may carry the server's address or a password.
            raise LimiterUnavailableError(f"Redis failed: {type(exc).__name__}") from exc

    return wrapped


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisLimiter:
    """Limits shared by many instances through one Redis.

    Implements :class:`~keyplane.limits.base.Limiter`. The keys are laid out for Redis
    Cluster (one slot per API key), but the sweeps (:meth:`expire`, :meth:`forget_spent`) use a
    standalone client's ``SCAN``. Redis errors (connection errors, timeouts, ...) leave every
    method as :class:`~keyplane.errors.LimiterUnavailableError`, the driver's exception as its
    cause, so the caller decides whether to fail open or closed.

    Args:
        redis: the client; responses may be decoded or not.
        seeder: installs a missing budget counter from the ledger, by awaiting
            :meth:`install_spent` (:class:`~keyplane.limits.base.CounterSeeder`); one seeding
            per counter at a time in this process, however many admissions wait for it.
        prefix: the first part of every key name; no braces.
        remember_expired: how long the token estimate of a reservation that expired unsettled
            is kept, so a late report corrects it instead of charging the tokens twice.
        use_caller_clock: take "now" from the callers' arguments instead of Redis ``TIME``.
            For tests only: instances with skewed clocks would disagree about windows and
            holds, and window keys get no TTL (Redis cannot tell when the caller's clock says
            a window is full again).
        sweep_batches: how many ``SCAN`` steps of :meth:`expire` one call may take; the next
            call goes on where it stopped.
        guard: keeps the durable promise of each key's marker (:mod:`.markers`); the
            default keeps it in this process only.
        after_loss: what long windows and slots do once Redis is found to have lost them.
        keeper: where admitted requests leave when each long window is full again, for
            ``reseed`` (which needs it).
    """

    def __init__(
        self,
        redis: Redis,
        seeder: CounterSeeder,
        *,
        prefix: str = "kp",
        remember_expired: timedelta = timedelta(hours=1),
        use_caller_clock: bool = False,
        sweep_batches: int = 10,
        guard: Guard | None = None,
        after_loss: AfterLoss = "fail_closed",
        keeper: WindowKeeper | None = None,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must be non-empty and hold no braces")
        self._redis = redis
        self._seeder = seeder
        self._seeding = SingleFlight()
        self._seeds_ended = 0  # seeds ended, of any counter
        #: counter -> the value of ``_seeds_ended`` when its last seed here ended.
        self._seeded: dict[tuple[str, str, Reset, datetime], int] = {}
        self._prefix = prefix
        self._remember_us = remember_expired // timedelta(microseconds=1)
        self._use_caller_clock = use_caller_clock
        self._sweep_batches = sweep_batches
        self._sweep_cursor = 0
        self._scripts = scripts()
        self._guard: Guard = guard or MemoryGuard()
        if after_loss == "reseed" and keeper is None:
            raise ValueError("reseed needs a keeper of the long windows")
        self._after_loss = after_loss
        self._keeper = keeper
        self._markers = Markers(
            redis, self._guard, after_loss, self._key, self._window_key, self._clock
        )

    @property
    def losses(self) -> int:
        """Keys whose long windows and slots Redis was found to have lost, for monitoring."""
        return self._markers.losses

    # -- key names ------------------------------------------------------------------------

    def _key(self, key_id: str) -> str:
        # An empty tag or a brace inside it would scatter one key's state over many slots.
        if not key_id or "{" in key_id or "}" in key_id:
            raise ValueError("an API key id must be non-empty and hold no braces")
        return f"{self._prefix}:{{{key_id}}}"

    def _hold_keys(self, key_id: str) -> list[str]:
        base = self._key(key_id)
        return [f"{base}:{name}" for name in ("res", "exp", "late", "slots", "reserved")]

    def _window_key(self, key_id: str, ask: WindowAsk) -> str:
        window = ask.window
        name = f"{self._key(key_id)}:tat:{ask.kind}:{ask.name}:{window.limit}:{window.period_us}"
        # A calendar-day window's state is a debt at the start of the day, not at now.
        return f"{name}:day" if ask.calendar_day else name

    @staticmethod
    def _member(scope: str, reset: Reset, period_start: datetime) -> str:
        if _LUA_SPACE.search(scope):
            raise ValueError("a budget scope cannot hold whitespace")
        return f"{scope}:{reset.value}:{micros(period_start)}"

    def _pattern(self, suffix: str) -> str:
        """The ``SCAN`` pattern of one kind of key, of every API key under this prefix."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self._prefix) + ":{*}:" + suffix

    def _clock(self, now: datetime) -> int:
        return micros(now) if self._use_caller_clock else -1

    # -- admission ------------------------------------------------------------------------

    @_wrapping_redis_errors
    async def admit(self, admission: Admission, now: datetime) -> AdmissionResult:
        """Check and (only if everything allows it) consume, in one script call.

        When a budget's spent counter is missing the script consumes nothing and names it;
        it is seeded from the ledger and the admission runs again.
        """
        key_id = admission.key_id
        base = self._key(key_id)
        budgets = admission.budgets
        keys = [
            *self._hold_keys(key_id),
            *(self._window_key(key_id, ask) for ask in admission.windows),
            *(f"{base}:spent:{self._member(b.scope, b.reset, b.period_start)}" for b in budgets),
        ]
        args: list[str | int] = [
            self._clock(now),
            micros(admission.hold_until) - micros(now),
            admission.request_id,
            -1 if admission.max_parallel is None else admission.max_parallel,
            self._remember_us,
            len(admission.windows),
            len(budgets),
            admission.tokens_in,
            admission.tokens_out,
        ]
        for ask in admission.windows:
            if ask.cost < 0:
                raise ValueError("a window cost cannot be negative")
            # Anything past the burst is refused; the script needs no bigger number.
            cost = min(ask.cost, MAX_WINDOW_VALUE + 1)
            args += [cost, ask.window.burst, *window_args(ask.window), int(ask.calendar_day)]
        for budget in budgets:
            if budget.cost < 0:
                raise ValueError("a budget cost cannot be negative")
            limit = "" if budget.limit is None else str(budget.limit)
            args += [limit, budget.cost, budget.scope]
        long_windows = [a for a in admission.windows if a.window.period_us >= LONG_WINDOW_US]
        hold_us = max(0, micros(admission.hold_until) - micros(now))
        need_us = -1
        if long_windows or admission.max_parallel is not None:
            # The marker must outlast every slot this admission may take and every long
            # window's debt (at most its burst), so that the marker's end bounds them all.
            need_us = min(
                max([hold_us, *(full_burst_us(ask.window) for ask in long_windows)]),
                _MAX_NEED_US // 3,
            )
        keys += [f"{base}:mark", f"{base}:lost"]
        args += [need_us, 2 * need_us]
        rounds = skipped = 0
        while rounds < _SEED_ROUNDS:
            renewals, seeds = self._markers.renewals, self._seeds_ended
            reply = await self._scripts.admit(self._redis, keys, args)
            status = int(reply[0])
            if status == _NEEDS_STATE:
                rounds += 1
                # A renewal that ended while this reply was on its way may well have been
                # this key's: look again rather than start another (single flight).
                if self._markers.renewals == renewals:
                    await self._markers.renew(key_id, long_windows, hold_us, need_us, now)
                continue
            if status != _NEEDS_SEED:
                result = self._result(admission, reply)
                if int(reply[-2]):
                    # A third of the marker's life is gone: renew it off this request's path.
                    self._markers.renew_soon(key_id, long_windows, hold_us, need_us, now)
                return result
            missing = [
                (key_id, budgets[int(i)].scope, budgets[int(i)].reset, budgets[int(i)].period_start)
                for i in reply[1:]
            ]
            # A counter seeded while this reply was on its way needs no other seed: look
            # again (a thousand cold admissions would otherwise seed it a few times over).
            unseeded = [c for c in dict.fromkeys(missing) if self._seeded.get(c, -1) <= seeds]
            if not unseeded and skipped < _SEED_ROUNDS:
                skipped += 1
                continue
            rounds += 1
            for counter in unseeded or dict.fromkeys(missing):
                await self._seed(*counter)
        raise CountersUnsettledError("budget counters could not be seeded from the ledger")

    async def _seed(self, key_id: str, scope: str, reset: Reset, start: datetime) -> None:
        """Seed one counter from the ledger, once for every admission waiting for it."""
        counter = (key_id, scope, reset, start)

        async def seed() -> None:
            try:
                await self._seeder.seed(key_id, scope, reset, start, self)
            finally:
                self._seeds_ended += 1
                if len(self._seeded) >= _SEEDED_REMEMBERED:
                    self._seeded.clear()  # forgetting costs at most one more seed
                self._seeded[counter] = self._seeds_ended

        await self._seeding.run(counter, seed)

    def _result(self, admission: Admission, reply: Sequence[Any]) -> AdmissionResult:
        """The verdict from the script's raw state, worked out exactly as MemoryLimiter does."""
        now_us = int(reply[1])
        now = from_micros(now_us)
        free = int(reply[2]) if admission.max_parallel is not None else None
        position = 3
        window_states: list[gcra.WindowState] = []
        for ask in admission.windows:
            u, v = int(reply[position]), int(reply[position + 1])
            position += 2
            window = ask.window
            at = window_now_us(ask, now_us)  # the debt is owed from there
            tat = None if u == v == 0 else at * window.limit + u * window.period_us + v
            window_states.append(check_window(ask, tat, now_us)[0])
        lefts: list[int] = []
        for budget in admission.budgets:
            spent, reserved = int(reply[position]), int(reply[position + 1])
            position += 2
            if budget.limit is not None:
                lefts.append(max(0, budget.limit - spent - reserved))
        result = judge(admission, now, free, window_states, lefts)
        if (int(reply[0]) == _ADMITTED) != (result.refusal is None):
            raise StorageError("the limiter script and the limit rules disagree")
        if self._keeper is not None and result.refusal is None:
            for ask, state in zip(admission.windows, window_states, strict=True):
                if ask.window.period_us >= LONG_WINDOW_US:
                    self._keeper.record(admission.key_id, window_id(ask), state.reset_at_us)
        lost_until = int(reply[position + 1])
        if result.refusal is Code.CONCURRENCY_EXCEEDED and lost_until > now_us:
            # Refused for slots Redis lost: they are all over by then.
            result = replace(result, retry_after=-(-(lost_until - now_us) // 1000) / 1000)
        return result

    @_wrapping_redis_errors
    async def settle(self, settlement: Settlement, now: datetime) -> None:
        """Release the request's reservation and slot; correct token estimates (one call)."""
        if settlement.request_id is None and not settlement.token_windows:
            return
        key_id = settlement.key_id
        keys = [
            *self._hold_keys(key_id),
            *(self._window_key(key_id, ask) for ask in settlement.token_windows),
        ]
        args: list[str | int] = [
            self._clock(now),
            0 if settlement.request_id is None else 1,
            settlement.request_id or "",
            self._remember_us,
            len(settlement.token_windows),
            settlement.input_tokens,
            settlement.output_tokens,
        ]
        for ask in settlement.token_windows:
            counts = ask.counts if ask.counts in ("input", "output") else "total"
            args += [counts, *window_args(ask.window)]
        await self._scripts.settle(self._redis, keys, args)

    @_wrapping_redis_errors
    async def expire(self, now: datetime) -> int:
        """Release reservations past their hold time; forget old estimates; return how many.

        Admits and settlements release a key's expired reservations themselves (those are not
        counted here), so this sweep mostly keeps idle keys tidy. It walks the keys holding
        reservations with ``SCAN`` (at most ``sweep_batches`` steps per call, resuming where
        the last call stopped) and runs the sweep script on each, pipelined.
        """
        pattern = self._pattern("res")
        start = len(self._prefix) + 2  # past "<prefix>:{"
        released = 0
        for _ in range(self._sweep_batches):
            cursor, names = await self._redis.scan(
                self._sweep_cursor, match=pattern, count=_SCAN_COUNT
            )
            self._sweep_cursor = int(cursor)
            key_ids = [_text(name)[start : -len("}:res")] for name in names]
            if key_ids:
                released += sum(await self._sweep(key_ids, now))
            if self._sweep_cursor == 0:
                break
        return released

    async def _sweep(self, key_ids: list[str], now: datetime) -> list[int]:
        script = self._scripts.sweep
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id in key_ids:
                    pipe.evalsha(
                        script.sha, 5, *self._hold_keys(key_id), self._clock(now), self._remember_us
                    )
                results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await self._redis.script_load(script.text)
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return [int(r) for r in results]
        raise StorageError("the sweep script could not be loaded")  # pragma: no cover

    # -- budget counters ------------------------------------------------------------------

    @_wrapping_redis_errors
    async def install_spent(
        self, key_id: str, scope: str, reset: Reset, period_start: datetime, spent: int
    ) -> bool:
        """Install a budget counter read from the ledger (``SET NX``); True if this one won.

        Of several instances seeding the same counter at once only the first installs it. The
        counter expires a day after its period ends (a budget that never resets is re-read
        from the ledger every 30 days).
        """
        member = self._member(scope, reset, period_start)
        base = self._key(key_id)
        end = next_reset(reset, period_start)
        until = "" if end is None else micros(end + timedelta(days=1)) // 1000
        installed = await self._scripts.install(
            self._redis, [f"{base}:spent:{member}", f"{base}:scopes"], [spent, member, until]
        )
        return bool(installed)

    @_wrapping_redis_errors
    async def add_spent(
        self, key_id: str, model: str | None, cost: int, recorded_at: datetime
    ) -> None:
        """Advance the live counters a committed report counts in; never create one.

        A counter counts the report when its scope is the key's ("") or a pattern matching
        ``model``, and its period holds ``recorded_at``. A missing counter is left missing: it
        will be seeded from the ledger, which already holds this report. Two round trips: the
        key's counters are listed first, because model globs are matched in Python.
        """
        if not cost:
            return
        base = self._key(key_id)
        scopes_key = f"{base}:scopes"
        keys = [scopes_key]
        args: list[str | int] = [cost]
        for raw in await self._redis.smembers(scopes_key):
            member = _text(raw)
            scope, reset_text, start_text = member.rsplit(":", 2)
            start = from_micros(int(start_text))
            end = next_reset(Reset(reset_text), start)
            counts = scope_counts(scope, model)
            current = start <= recorded_at and (end is None or recorded_at < end)
            keys.append(f"{base}:spent:{member}")
            args += [member, 1 if counts and current else 0]
        if len(keys) > 1:
            await self._scripts.add_spent(self._redis, keys, args)

    @_wrapping_redis_errors
    async def reset(self, key_id: str, windows: Sequence[WindowAsk], slots: bool) -> int:
        """Make ``windows`` full again and free the key's slots, in one script call: every
        instance sees the reset at once. The windows are named exactly (as admissions name
        them), so no ``SCAN`` is needed."""
        base = self._key(key_id)
        keys = [
            *self._hold_keys(key_id),
            f"{base}:lost",
            *(self._window_key(key_id, ask) for ask in windows),
        ]
        return int(await self._scripts.reset(self._redis, keys, [1 if slots else 0]))

    @_wrapping_redis_errors
    async def ping(self) -> None:
        """Raise a Redis error unless Redis answers."""
        await self._redis.ping()

    @_wrapping_redis_errors
    async def forget_spent(self) -> int:
        """Drop every live budget counter under this prefix; return how many were dropped.

        Each is seeded again from the ledger when next needed: for after reports were committed
        that the counters never heard of (Redis was unreachable). The keys' sets of counters
        are left alone: a set without its counter is pruned by :meth:`add_spent`, whereas a
        counter missing from its set (a seed racing this sweep) would stop counting reports.
        """
        pattern = self._pattern("spent:*")
        dropped, batch = 0, []
        async for name in self._redis.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(name)
            if len(batch) >= _SCAN_COUNT:
                dropped += await self._redis.unlink(*batch)
                batch.clear()
        if batch:
            dropped += await self._redis.unlink(*batch)
        return dropped


async def close_pubsub(pubsub: PubSub) -> None:
    """Close a pub/sub connection. redis-py types ``aclose`` only from 8.2 on: called through
    ``Any``, the call type-checks against either."""
    close: Any = pubsub.aclose
    await close()
