"""The Redis limiter: what only it does (many instances, key layout, scripts, exactness).

The scenarios it shares with MemoryLimiter are in ``test_contract.py``; Redis connection
details are in ``harness.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from keyplane.domain import gcra
from keyplane.domain.admission import (
    Admission,
    AdmissionResult,
    BudgetAsk,
    Settlement,
    WindowAsk,
    micros,
)
from keyplane.domain.decisions import Code
from keyplane.domain.periods import Reset, next_reset, period_start
from keyplane.errors import CountersUnsettledError, LimiterUnavailableError
from keyplane.limits.redis import RedisLimiter
from keyplane.limits.scripts import Script
from tests.limits.harness import (
    MINUTE_US,
    NOW,
    Limits,
    NoSeeder,
    admission,
    budget,
    delete_prefix,
    memory_limits,
    new_client,
    redis_limits,
    redis_url,
    require_redis,
)

SECOND_US = gcra.MICROS
DAY_US = 86_400 * SECOND_US


async def test_two_instances_never_overspend_one_budget(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    ledger_spent = 0
    one = redis_limits(clients(), prefix, ledger_spent, caller_clock=False)
    two = redis_limits(clients(), prefix, ledger_spent, caller_clock=False)
    now = datetime.now(UTC)
    ask = BudgetAsk(
        "",
        5_000_000,
        Reset.DAILY,
        period_start(Reset.DAILY, now),
        next_reset(Reset.DAILY, now),
        100_000,
    )
    results = await asyncio.gather(
        *(
            (one if i % 2 else two).admit(
                Admission("key_1", f"r{i}", now + timedelta(minutes=5), budgets=(ask,)), now
            )
            for i in range(1000)
        )
    )
    assert sum(r.refusal is None for r in results) == 50
    assert {r.refusal for r in results} == {None, Code.BUDGET_EXCEEDED}
    reserved = await clients().hget(f"{prefix}:{{key_1}}:reserved", "")
    assert int(reserved) == 5_000_000


async def test_two_instances_share_one_rate_window(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    one = redis_limits(clients(), prefix, caller_clock=False)
    two = redis_limits(clients(), prefix, caller_clock=False)
    rate = WindowAsk("per_minute", "rate", gcra.Window(50, MINUTE_US, 50), 1)
    now = datetime.now(UTC)
    results = await asyncio.gather(
        *(
            (one if i % 2 else two).admit(
                Admission("key_1", f"r{i}", now + timedelta(minutes=1), windows=(rate,)), now
            )
            for i in range(200)
        )
    )
    assert sum(r.refusal is None for r in results) == 50
    refused = [r for r in results if r.refusal is not None]
    assert {r.refusal for r in refused} == {Code.RATE_LIMITED}
    # The next unit comes back within one emission interval (1.2 s) of Redis's clock.
    assert all(r.retry_after is not None and 0 < r.retry_after <= 1.2 for r in refused)


async def test_only_the_first_seed_is_installed(prefix: str, clients: Callable[..., Redis]) -> None:
    instances = [redis_limits(clients(), prefix) for _ in range(5)]
    start = period_start(Reset.MONTHLY, NOW)
    installed = await asyncio.gather(
        *(
            limits.limiter.install_spent("key_1", "", Reset.MONTHLY, start, 1000 * (i + 1))
            for i, limits in enumerate(instances)
        )
    )
    assert sum(bool(done) for done in installed) == 1
    winner = 1000 * (installed.index(True) + 1)
    assert int(await clients().get(f"{prefix}:{{key_1}}:spent::monthly:{_us(start)}")) == winner
    late = await instances[0].limiter.install_spent("key_1", "", Reset.MONTHLY, start, 7)
    assert late is False
    # Every instance now admits against the installed counter, and seeds nothing more.
    for limits in instances:
        result = await limits.admit(admission("a", budgets=(budget(10_000, 0),)))
        assert result.limits[0].remaining == 10_000 - winner
        assert limits.ledger.seeds == 0


async def test_a_missing_counter_is_seeded_once_then_admission_retries(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    limits = redis_limits(clients(), prefix, spent=400_000)
    result = await limits.admit(admission("a", budgets=(budget(1_000_000, 500_000),)))
    assert result.refusal is None and result.limits[0].remaining == 100_000
    assert limits.ledger.seeds == 1
    result = await limits.admit(admission("b", budgets=(budget(1_000_000, 500_000),)))
    assert result.refusal is Code.BUDGET_EXCEEDED
    assert limits.ledger.seeds == 1


async def test_admission_fails_when_the_ledger_never_seeds(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    calls = []

    class SeedNothing:
        async def seed(self, *args: object) -> None:
            calls.append(args)

    limiter = RedisLimiter(clients(), SeedNothing(), prefix=prefix, use_caller_clock=True)
    rate = WindowAsk("m", "rate", gcra.Window(1, MINUTE_US, 1), 1)
    with pytest.raises(CountersUnsettledError):
        await limiter.admit(admission("a", windows=(rate,), budgets=(budget(10, 1),)), NOW)
    assert len(calls) == 5  # one seed, and one more per instance that might drop the counter
    # Nothing was consumed: the window still has its one request.
    result = await limiter.admit(admission("b", windows=(rate,)), NOW)
    assert result.refusal is None


async def test_add_spent_never_creates_a_counter(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    client = clients()
    limits = redis_limits(client, prefix, spent=0)
    await limits.add_spent("key_1", "gpt-4o", 500, NOW)
    assert [name async for name in client.scan_iter(match=f"{prefix}:*")] == []
    start = period_start(Reset.MONTHLY, NOW)
    await limits.limiter.install_spent("key_1", "", Reset.MONTHLY, start, 10)
    await limits.limiter.install_spent("key_1", "gpt-4*", Reset.MONTHLY, start, 20)
    april = next_reset(Reset.MONTHLY, NOW)
    assert april is not None
    await limits.add_spent("key_1", "gpt-4o", 500, NOW)
    await limits.add_spent("key_1", "gpt-4o", 7, april)  # another period: not these counters
    base = f"{prefix}:{{key_1}}:spent"
    assert int(await client.get(f"{base}::monthly:{_us(start)}")) == 510
    assert int(await client.get(f"{base}:gpt-4*:monthly:{_us(start)}")) == 520
    # A counter that expired is dropped from the key's set of counters.
    await client.delete(f"{base}:gpt-4*:monthly:{_us(start)}")
    await limits.add_spent("key_1", "gpt-4o", 1, NOW)
    members = {m.decode() for m in await client.smembers(f"{prefix}:{{key_1}}:scopes")}
    assert members == {f":monthly:{_us(start)}"}
    assert await client.exists(f"{base}:gpt-4*:monthly:{_us(start)}") == 0


async def test_forgotten_counters_are_seeded_again(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    client = clients()
    limits = redis_limits(client, prefix, spent=100)
    for key_id in ("key_1", "key_2"):
        ask = Admission(key_id, "a", NOW, budgets=(budget(1000, 0),))
        assert (await limits.admit(ask)).limits[0].remaining == 900
    limits.ledger.spent = 300  # reports the counters missed while Redis was unreachable
    assert await limits.limiter.forget_spent() == 2
    result = await limits.admit(admission("b", budgets=(budget(1000, 0),)))
    assert result.limits[0].remaining == 700
    assert limits.ledger.seeds == 3
    other = redis_limits(client, f"{prefix}x")  # another prefix is another deployment
    assert await other.limiter.forget_spent() == 0


async def test_every_key_carries_the_hash_tag_of_its_api_key(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    client = clients()
    limits = redis_limits(client, prefix, spent=0)
    rate = WindowAsk("m", "rate", gcra.Window(10, MINUTE_US, 10), 1)
    tokens = WindowAsk("t", "tokens", gcra.Window(1000, MINUTE_US, 1000), 10, "input")
    start, reset_at = period_start(Reset.MONTHLY, NOW), next_reset(Reset.MONTHLY, NOW)
    per_model = BudgetAsk("gpt-{4}*", 10**6, Reset.MONTHLY, start, reset_at, 10)
    for key_id in ("key_1", "key_2"):
        await limits.admit(
            Admission(
                key_id,
                "a",
                NOW + timedelta(minutes=5),
                windows=(rate, tokens),
                max_parallel=2,
                budgets=(budget(10**6, 10), per_model),
                tokens_in=10,
            ),
            NOW,
        )
        await limits.admit(Admission(key_id, "b", NOW, windows=(tokens,), tokens_in=10), NOW)
        await limits.expire(NOW + timedelta(seconds=1))  # "b" expires: its estimate is kept
    names = [name.decode() async for name in client.scan_iter(match=f"{prefix}:*")]
    kinds = set()
    for name in names:
        match = re.fullmatch(rf"{prefix}:\{{(key_[12])\}}:([a-z]+)(:.*)?", name)
        assert match is not None, name
        assert key_slot(name.encode()) == key_slot(match.group(1).encode())
        kinds.add(match.group(2))
    assert kinds == {"tat", "res", "exp", "late", "slots", "reserved", "spent", "scopes", "mark"}


async def test_idle_state_expires(prefix: str, clients: Callable[..., Redis]) -> None:
    client = clients()
    limits = redis_limits(client, prefix, caller_clock=False)
    now = datetime.now(UTC)
    rate = WindowAsk("s", "rate", gcra.Window(10, SECOND_US, 10), 1)
    daily = BudgetAsk(
        "", 10**6, Reset.DAILY, period_start(Reset.DAILY, now), next_reset(Reset.DAILY, now), 5
    )
    ask = Admission(
        "key_1", "a", now + timedelta(minutes=5), windows=(rate,), budgets=(daily,), max_parallel=1
    )
    assert (await limits.admit(ask, now)).refusal is None
    base = f"{prefix}:{{key_1}}"
    # One request of ten per second: the window is full again 100 ms later.
    assert 0 < await client.pttl(f"{base}:tat:rate:s:10:{SECOND_US}") <= 102
    end = next_reset(Reset.DAILY, now)
    assert end is not None
    day_after_ms = (end + timedelta(days=1) - datetime.now(UTC)).total_seconds() * 1000
    spent_key = f"{base}:spent::daily:{_us(period_start(Reset.DAILY, now))}"
    assert abs(await client.pttl(spent_key) - day_after_ms) < 5_000
    hour_ms = 3_600_000
    for name in ("res", "exp", "slots", "reserved"):
        assert (
            5 * 60_000 + hour_ms
            <= await client.pttl(f"{base}:{name}")
            <= 5 * 60_000 + hour_ms + 2000
        )
    await asyncio.sleep(0.11)
    assert await client.exists(f"{base}:tat:rate:s:10:{SECOND_US}") == 0


async def test_holds_expire_on_redis_time(prefix: str, clients: Callable[..., Redis]) -> None:
    limits = redis_limits(clients(), prefix, caller_clock=False)
    now = datetime.now(UTC)
    # Redis's clock cannot be injected: the hold lasts long enough (2 s) that the four
    # admissions below land inside it on a loaded machine (50 ms did not), and the sleep
    # outlasts it, which no slowness can undo.
    short = now + timedelta(seconds=2)
    for key_id in ("key_1", "key_2"):
        held = await limits.admit(Admission(key_id, "a", short, max_parallel=1), now)
        assert held.refusal is None
        refused = await limits.admit(Admission(key_id, "b", short, max_parallel=1), now)
        assert refused.refusal is Code.CONCURRENCY_EXCEEDED
    await asyncio.sleep(2.1)
    # key_1: released by its next admission; key_2: by the sweep. Redis's clock decides, not
    # the "now" given.
    result = await limits.admit(Admission("key_1", "c", short, max_parallel=1), now)
    assert result.refusal is None
    assert await limits.expire(now) == 1


async def test_a_warm_admission_is_one_round_trip(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    sent: list[bytes] = []

    class Counting(Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            data = command if isinstance(command, bytes | str) else b"".join(command)
            sent.append(data.encode() if isinstance(data, str) else data)
            await super().send_packed_command(command, check_health)

    client = Redis.from_pool(ConnectionPool.from_url(redis_url(), connection_class=Counting))
    try:
        limits = redis_limits(client, prefix, spent=0)
        rate = WindowAsk("m", "rate", gcra.Window(1000, MINUTE_US, 1000), 1)
        tokens = WindowAsk("t", "tokens", gcra.Window(10**6, MINUTE_US, 10**6), 10, "input")
        start, reset_at = period_start(Reset.MONTHLY, NOW), next_reset(Reset.MONTHLY, NOW)
        per_model = BudgetAsk("gpt-4*", 10**6, Reset.MONTHLY, start, reset_at, 10)

        def ask(request_id: str) -> Admission:
            return admission(
                request_id,
                windows=(rate, tokens),
                budgets=(budget(10**9, 10), per_model),
                max_parallel=100,
                tokens_in=10,
            )

        assert (await limits.admit(ask("warm"))).refusal is None  # loads scripts, seeds
        sent.clear()
        for i in range(10):
            assert (await limits.admit(ask(f"r{i}"))).refusal is None
        assert len(sent) == 10
        assert all(b"EVALSHA" in message[:32] for message in sent)
        sent.clear()
        await limits.settle(Settlement("key_1", "r0", 5, 0, (tokens,)))
        assert len(sent) == 1
    finally:
        await client.aclose()


async def test_an_unknown_script_is_sent_once_then_run_by_sha(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    client = clients()
    script = Script("arith.lua", "holds.lua", "sweep.lua")
    script.text += f"\n-- {secrets.token_hex(8)}"  # a script this server has never seen
    script.sha = hashlib.sha1(script.text.encode(), usedforsecurity=False).hexdigest()
    keys = [f"{prefix}:{{k}}:{name}" for name in ("res", "exp", "late", "slots", "reserved")]
    assert await client.script_exists(script.sha) == [False]
    assert await script(client, keys, [-1, 0]) == 0
    assert await client.script_exists(script.sha) == [True]
    assert await script(client, keys, [-1, 0]) == 0


async def test_connection_errors_reach_the_caller_wrapped() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    try:
        limiter = RedisLimiter(client, NoSeeder())
        rate = WindowAsk("m", "rate", gcra.Window(1, MINUTE_US, 1), 1)
        with pytest.raises(LimiterUnavailableError) as raised:
            await limiter.admit(admission("a", windows=(rate,)), NOW)
        assert isinstance(raised.value.__cause__, RedisConnectionError)
        assert str(port) not in str(raised.value)  # the driver's message stays out
    finally:
        await client.aclose()


def test_key_ids_and_prefixes_cannot_break_the_hash_tag() -> None:
    async def seed(*args: object) -> None:
        return None

    with pytest.raises(ValueError, match="braces"):
        RedisLimiter(Redis(), seed, prefix="kp{x}")
    limiter = RedisLimiter(Redis(), seed)
    with pytest.raises(ValueError, match="braces"):
        asyncio.run(limiter.admit(Admission("key_}", "a", NOW), NOW))


# -- exactness: the same answers as MemoryLimiter, to the microsecond ------------------------


def _us(when: datetime) -> int:
    return micros(when)


async def _both(
    memory: Limits, redis: Limits, ask: Admission, now: datetime
) -> tuple[AdmissionResult, AdmissionResult]:
    expected = await memory.admit(ask, now)
    got = await redis.admit(ask, now)
    assert got == expected
    return expected, got


@pytest.mark.parametrize(
    ("limit", "period_s", "costs"),
    [
        (7, 1, [1] * 10),
        (50, 60, [1] * 53),
        (3, 86_400, [1] * 5),
        (10**9, 30 * 86_400, [333_333_333, 333_333_333, 333_333_334, 1, 1]),
        (10**12, 1, [10**12 - 1, 1, 1]),
        (10**12, 30 * 86_400, [1, 10**12 - 1, 1]),
        (999_999_937, 7 * 86_400 + 1, [500_000_000, 499_999_937, 1]),
    ],
)
async def test_awkward_limits_admit_exactly_their_limit(
    prefix: str, clients: Callable[..., Redis], limit: int, period_s: int, costs: list[int]
) -> None:
    memory, redis = memory_limits(), redis_limits(clients(), prefix)
    window = WindowAsk("w", "tokens", gcra.Window(limit, period_s * SECOND_US, limit), 0, "input")
    admitted = 0
    for i, cost in enumerate(costs):
        ask = admission(f"r{i}", windows=(WindowAsk("w", "tokens", window.window, cost, "input"),))
        result, _ = await _both(memory, redis, ask, NOW)
        admitted += cost if result.refusal is None else 0
    assert admitted == limit
    # One emission interval later (rounded up to a microsecond) a unit is back, not before.
    interval = -(-period_s * SECOND_US // limit)
    one = WindowAsk("w", "tokens", window.window, 1, "input")
    early, _ = await _both(
        memory,
        redis,
        admission("early", windows=(one,)),
        NOW + timedelta(microseconds=interval - 1),
    )
    assert early.refusal is Code.TOKEN_LIMITED
    later = NOW + timedelta(microseconds=interval)
    result, _ = await _both(memory, redis, admission("later", windows=(one,)), later)
    assert result.refusal is None
    # And at arbitrary later instants both agree on everything they report.
    for step in (1, 999, 142_857, 10**6, 60 * 10**6, DAY_US):
        later += timedelta(microseconds=step)
        await _both(memory, redis, admission(f"s{step}", windows=(one,)), later)


async def test_money_is_exact_past_two_to_the_53(
    prefix: str, clients: Callable[..., Redis]
) -> None:
    limit = 10**18
    memory, redis = memory_limits(spent=limit - 3), redis_limits(clients(), prefix, limit - 3)
    for i, cost in enumerate([2, 2, 1, 1, 0]):
        await _both(memory, redis, admission(f"r{i}", budgets=(budget(limit, cost),)), NOW)
    result, _ = await _both(memory, redis, admission("x", budgets=(budget(limit, 0),)), NOW)
    assert result.refusal is Code.BUDGET_EXCEEDED and result.limits[0].remaining == 0
    await memory.settle(Settlement("key_1", "r0", 0, 0))
    await redis.settle(Settlement("key_1", "r0", 0, 0))
    result, _ = await _both(memory, redis, admission("y", budgets=(budget(limit, 2),)), NOW)
    assert result.refusal is None


_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("admit"),
            st.sampled_from([0, 0, 1, 999, 142_857, 10**6, 59 * 10**6, 3600 * 10**6]),
            st.integers(0, 5),  # request id
            st.lists(st.integers(0, 12), min_size=3, max_size=3),  # window costs (scaled)
            st.sampled_from([0, 1, 1000, 250_000]),  # budget cost
            st.sampled_from([None, 1, 2]),  # max parallel
            st.sampled_from([0, 10**6, 300 * 10**6]),  # hold (us)
        ),
        st.tuples(
            st.just("settle"),
            st.sampled_from([0, 1, 10**6, 3600 * 10**6]),
            st.integers(0, 5),
            st.integers(0, 30),
            st.integers(0, 30),
        ),
        st.tuples(st.just("expire"), st.sampled_from([0, 10**6, 300 * 10**6, 3601 * 10**6])),
        st.tuples(st.just("spend"), st.integers(0, 400_000)),
    ),
    min_size=1,
    max_size=25,
)
_WINDOWS = st.lists(
    st.tuples(
        st.sampled_from([1, 3, 7, 50, 1000, 10**9, 10**12]),  # limit
        st.sampled_from([1, 7, 60, 86_400, 30 * 86_400]),  # period (s)
        st.sampled_from([0, 1, 2]),  # burst: 0 = the limit, else limit * n // 2
        st.sampled_from(["rate", "input", "output", "total"]),
    ),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(windows=_WINDOWS, ops=_OPS, limit=st.sampled_from([None, 0, 10**6, 10**18]))
def test_redis_and_memory_agree_on_any_sequence(
    windows: list[tuple[int, int, int, str]],
    ops: list[tuple[Any, ...]],
    limit: int | None,
) -> None:
    require_redis()
    asyncio.run(_replay(windows, ops, limit))


def _cost(step: int, window: gcra.Window) -> int:
    """0..10: that many tenths of the burst; 11: one past the burst; 12: a single unit."""
    if step == 11:
        return window.burst + 1
    if step == 12:
        return 1
    return step * window.burst // 10


async def _replay(
    windows: list[tuple[int, int, int, str]], ops: list[tuple[Any, ...]], limit: int | None
) -> None:
    name = f"kpt{secrets.token_hex(6)}"
    client = new_client()
    try:
        memory, redis = memory_limits(spent=100_000), redis_limits(client, name, spent=100_000)
        asks = []
        for i, (lim, period_s, burst, counts) in enumerate(windows):
            window = gcra.Window(lim, period_s * SECOND_US, lim if burst == 0 else lim * burst // 2)
            kind = "rate" if counts == "rate" else "tokens"
            asks.append((f"w{i}", kind, window, None if kind == "rate" else counts))
        now = NOW
        for op in ops:
            if op[0] == "admit":
                _, step, rid, costs, cost, slot, hold = op
                now += timedelta(microseconds=step)
                ledger_budget = BudgetAsk(
                    "",
                    limit,
                    Reset.MONTHLY,
                    period_start(Reset.MONTHLY, now),
                    next_reset(Reset.MONTHLY, now),
                    cost,
                )
                ask = Admission(
                    "key_1",
                    f"r{rid}",
                    now + timedelta(microseconds=hold),
                    windows=tuple(
                        WindowAsk(n, k, w, _cost(c, w), counts)
                        for (n, k, w, counts), c in zip(asks, costs, strict=False)
                    ),
                    max_parallel=slot,
                    budgets=(ledger_budget,),
                    tokens_in=costs[0],
                    tokens_out=costs[1],
                )
                await _both(memory, redis, ask, now)
            elif op[0] == "settle":
                _, step, rid, used_in, used_out = op
                now += timedelta(microseconds=step)
                token_windows = tuple(
                    WindowAsk(n, k, w, 0, counts) for n, k, w, counts in asks if k == "tokens"
                )
                settlement = Settlement("key_1", f"r{rid}", used_in, used_out, token_windows)
                await memory.settle(settlement, now)
                await redis.settle(settlement, now)
                # Redis's settlement releases due reservations too, which MemoryLimiter leaves
                # to its next admission or sweep (when it starts their estimates' hour): sweep
                # both now, as a server does every second, so that hour starts together.
                assert await redis.expire(now) <= await memory.expire(now)
            elif op[0] == "expire":
                now += timedelta(microseconds=op[1])
                assert await redis.expire(now) <= await memory.expire(now)
            else:
                for limits in (memory, redis):
                    start = period_start(Reset.MONTHLY, now)
                    period = ("key_1", "", Reset.MONTHLY, start)
                    limits.ledger.periods[period] = limits.ledger.periods.get(period, 100_000)
                    limits.ledger.periods[period] += op[1]
                    await limits.add_spent("key_1", "m", op[1], now)
    finally:
        await delete_prefix(name)
        await client.aclose()
