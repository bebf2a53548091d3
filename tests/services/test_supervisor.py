"""The supervisor restarts a crashed loop with capped backoff, and says so; nothing really waits:
the backoff's sleep is injected, and each test releases it by hand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from keyplane.domain.analytics import Retention
from keyplane.domain.clock import ManualClock
from keyplane.services.analytics import RollupPruner
from keyplane.services.supervisor import LoopState, LoopStatus, Supervisor, uninterrupted
from keyplane.services.webhooks import WebhookDispatcher


class Gate:
    """An injected sleep: records each backoff and waits until the test lets it pass."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._asked = asyncio.Condition()
        self._open = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        async with self._asked:
            self.delays.append(seconds)
            self._asked.notify_all()
        await self._open.wait()
        self._open.clear()

    async def backoffs(self, count: int) -> None:
        """Wait until ``count`` backoffs have been asked for."""
        async with self._asked:
            await self._asked.wait_for(lambda: len(self.delays) >= count)

    def release(self) -> None:
        self._open.set()


def crashing(times: int, then: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs <= times:
            raise ConnectionError("redis://:hunter2@cache:6379 went away")
        await then()

    return body


async def forever() -> None:
    await asyncio.Event().wait()


def state(supervisor: Supervisor, name: str) -> LoopState:
    [found] = [s for s in supervisor.states() if s.name == name]
    return found


async def test_a_crashed_loop_is_restarted_after_a_backoff_and_its_state_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate()
    supervisor = Supervisor(base_delay=1.0, max_delay=8.0, sleep=gate.sleep)
    running = asyncio.Event()

    async def then() -> None:
        running.set()
        await forever()

    with caplog.at_level(logging.ERROR, logger="keyplane.services.supervisor"):
        supervisor.start("flaky", crashing(1, then), critical=True)
        await gate.backoffs(1)
        crashed = state(supervisor, "flaky")
        assert crashed.status is LoopStatus.RESTARTING
        assert (crashed.restarts, crashed.last_error) == (1, "ConnectionError")
        assert not supervisor.healthy  # a critical loop is down
        gate.release()
        await running.wait()
    assert state(supervisor, "flaky").status is LoopStatus.RUNNING
    assert supervisor.healthy
    assert "flaky" in caplog.text and "ConnectionError" in caplog.text
    assert "hunter2" not in caplog.text  # the exception's message is never logged
    await supervisor.stop()
    assert state(supervisor, "flaky").status is LoopStatus.STOPPED


async def test_backoff_doubles_with_each_crash_in_a_row_up_to_the_cap() -> None:
    gate = Gate()
    supervisor = Supervisor(base_delay=1.0, max_delay=5.0, sleep=gate.sleep)
    supervisor.start("broken", crashing(10**6, forever), critical=False)
    for count in range(1, 6):
        await gate.backoffs(count)
        gate.release()
    assert gate.delays[:5] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert state(supervisor, "broken").restarts >= 5
    assert supervisor.healthy  # not a critical loop: readiness is not degraded
    await supervisor.stop()


async def test_a_loop_that_ran_long_before_crashing_starts_its_backoff_over() -> None:
    gate = Gate()
    now = [0.0]
    lengths = iter([0.0, 0.0, 4.0, 0.0])  # how long each run lasts before it crashes

    async def body() -> None:
        now[0] += next(lengths)
        raise RuntimeError("crash")

    supervisor = Supervisor(
        base_delay=1.0, max_delay=4.0, sleep=gate.sleep, monotonic=lambda: now[0]
    )
    supervisor.start("rare", body, critical=False)
    for count in range(1, 4):
        await gate.backoffs(count)
        gate.release()
    await gate.backoffs(4)
    # The third run lasted max_delay: its crash is a first crash again.
    assert gate.delays == [1.0, 2.0, 1.0, 2.0]
    await supervisor.stop()


async def test_a_loop_that_returns_is_finished_not_restarted() -> None:
    gate = Gate()
    supervisor = Supervisor(sleep=gate.sleep)

    async def done() -> None:
        return

    supervisor.start("once", done, critical=True)
    await supervisor.finish("once")
    assert state(supervisor, "once") == LoopState("once", True, LoopStatus.STOPPED, 0, None)
    assert gate.delays == []
    await supervisor.stop()


async def test_stop_cancels_running_loops_and_loops_waiting_to_restart() -> None:
    gate = Gate()
    supervisor = Supervisor(sleep=gate.sleep)
    cancelled: list[str] = []

    async def tracked() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            cancelled.append("steady")
            raise

    supervisor.start("steady", tracked, critical=True)
    supervisor.start("waiting", crashing(1, forever), critical=True)
    await gate.backoffs(1)
    await asyncio.sleep(0)  # let "steady" start
    await supervisor.stop()
    assert cancelled == ["steady"]
    assert {s.status for s in supervisor.states()} == {LoopStatus.STOPPED}


async def test_names_are_unique_and_delays_are_sane() -> None:
    supervisor = Supervisor()
    supervisor.start("a", forever, critical=False)
    with pytest.raises(ValueError):
        supervisor.start("a", forever, critical=False)
    with pytest.raises(ValueError):
        Supervisor(base_delay=0)
    with pytest.raises(ValueError):
        Supervisor(base_delay=2, max_delay=1)
    await supervisor.stop()


async def test_finish_runs_a_loop_in_backoff_at_once_and_never_restarts_it_again() -> None:
    """Runtime.stop finishes the ledger writer so it drains its queue: a writer that keeps
    crashing must neither hold the stop for a whole backoff nor forever."""
    gate = Gate()
    supervisor = Supervisor(base_delay=30.0, max_delay=30.0, sleep=gate.sleep)
    runs = 0

    async def always_crashing() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("still broken")

    supervisor.start("writer", always_crashing, critical=True)
    await gate.backoffs(1)  # waiting out 30 s, which the gate never lets pass
    await supervisor.finish("writer")
    assert runs == 2  # ran once more, straight away, and was not restarted after that
    assert state(supervisor, "writer") == LoopState(
        "writer", True, LoopStatus.STOPPED, 1, "RuntimeError"
    )
    assert gate.delays == [30.0]
    await supervisor.stop()


async def test_stop_does_not_wait_for_ever_for_a_loop_that_ignores_its_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(stop_grace=0.05)
    release = asyncio.Event()

    async def stubborn() -> None:
        # What an uncancellable teardown looks like from outside: cancelled, it goes on
        # waiting until something else lets it go.
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    supervisor.start("stubborn", stubborn, critical=False)
    supervisor.start("polite", forever, critical=False)
    await asyncio.sleep(0)  # let both start
    with caplog.at_level(logging.ERROR, logger="keyplane.services.supervisor"):
        # The guard against a hang, not a timing bound: stop returns after its grace.
        await asyncio.wait_for(supervisor.stop(), 30)
    assert "background loop(s) stubborn did not stop" in caplog.text
    assert {s.status for s in supervisor.states()} == {LoopStatus.STOPPED}
    release.set()  # the stubborn loop ends now; nothing is left pending
    await asyncio.sleep(0)


class Write:
    """A write the test holds open: it starts, then waits for ``release``; it records
    whether it ran to its end or was cancelled halfway."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.outcome: str | None = None

    async def __call__(self, *_args: object, **_kwargs: object) -> list[object]:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        self.outcome = "finished"
        return []


async def _still_running(task: asyncio.Future[object]) -> bool:
    """Whether ``task`` is still running after the loop has had many turns to end it."""
    for _ in range(20):
        await asyncio.sleep(0)
    return not task.done()


async def test_work_run_uninterrupted_ends_before_its_cancelled_caller() -> None:
    write = Write()
    caller = asyncio.ensure_future(uninterrupted(write()))
    await write.started.wait()
    caller.cancel()
    assert await _still_running(caller)  # waiting for the write, not abandoning it
    write.release.set()
    await asyncio.wait([caller])
    assert caller.cancelled()  # the cancellation still goes through, once the write is done
    assert write.outcome == "finished"


async def test_a_caller_cancelled_twice_stops_waiting_and_the_work_goes_on() -> None:
    write = Write()
    caller = asyncio.ensure_future(uninterrupted(write()))
    await write.started.wait()
    caller.cancel()
    assert await _still_running(caller)
    caller.cancel()  # the stop's grace is over
    await asyncio.wait([caller])
    assert caller.cancelled() and write.outcome is None
    write.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert write.outcome == "finished"  # never cut halfway


START = datetime(2026, 1, 1, tzinfo=UTC)


class _Store:
    """The one store method a loop is being tested on, held open by a :class:`Write`."""

    def __init__(self, method: str, write: Write) -> None:
        setattr(self, method, write)


def _pruner(write: Write) -> Callable[[], Awaitable[None]]:
    store = _Store("prune", write)
    pruner = RollupPruner(store, ManualClock(START), Retention(), None, interval=60.0)  # type: ignore[arg-type]
    return pruner.run


def _dispatcher(write: Write) -> Callable[[], Awaitable[None]]:
    store = _Store("claim", write)
    dispatcher = WebhookDispatcher(store, None, None, ManualClock(START), b"s" * 32)  # type: ignore[arg-type]
    return dispatcher.run


@pytest.mark.parametrize("loop", [_pruner, _dispatcher], ids=["rollup_pruning", "webhooks"])
async def test_a_stop_lets_a_loops_write_in_flight_finish(
    loop: Callable[[Write], Callable[[], Awaitable[None]]],
) -> None:
    """The loops seen cancelled mid-transaction at a stop (the pool then logged a failed
    reset, and its log record kept the stopped runtime alive)."""
    write = Write()
    supervisor = Supervisor()
    supervisor.start("loop", loop(write), critical=False)
    await write.started.wait()
    stopping = asyncio.ensure_future(supervisor.stop())
    assert await _still_running(stopping)
    write.release.set()
    await stopping
    assert write.outcome == "finished"
