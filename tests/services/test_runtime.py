"""Runtime start/stop: background work is finished before the store closes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from keyplane.domain.clock import ManualClock
from keyplane.services.last_used import LastUsedRecorder
from keyplane.services.runtime import Runtime
from tests.conftest import Database


async def test_stop_writes_every_pending_use_before_closing_the_store(
    database: Database, clock: ManualClock
) -> None:
    runtime = await Runtime.start(database.settings(), clock)
    closed_while_writing: list[bool] = []
    store_closed = False
    real_close = runtime.store.close

    async def close() -> None:
        nonlocal store_closed
        store_closed = True
        await real_close()

    writing = asyncio.Event()
    finish = asyncio.Event()

    def slow(touch):  # type: ignore[no-untyped-def]
        async def write(batch: Mapping[str, datetime]) -> None:
            # A write still running while stop() goes on: it ends only when the test says
            # (a fixed sleep here assumed how long stop() takes to reach the close).
            writing.set()
            await finish.wait()
            closed_while_writing.append(store_closed)
            await touch(batch)

        return write

    runtime.store.close = close  # type: ignore[method-assign]
    runtime.last_used._write = slow(runtime.last_used._write)  # type: ignore[method-assign]
    runtime.management_last_used._write = slow(  # type: ignore[method-assign]
        runtime.management_last_used._write
    )
    runtime.last_used.record("key_x", clock.now())
    runtime.management_last_used.record("mk_x", clock.now())
    stopping = asyncio.create_task(runtime.stop())
    await writing.wait()
    for _ in range(10):  # let stop() run as far as it can without the write
        await asyncio.sleep(0)
    assert not store_closed and not stopping.done()
    finish.set()
    await stopping
    assert closed_while_writing == [False, False]
    assert runtime.last_used.pending == runtime.management_last_used.pending == 0


async def test_a_flush_in_flight_is_awaited_by_the_next_one() -> None:
    written: list[str] = []
    started = asyncio.Event()
    finish = asyncio.Event()

    async def touch(batch: Mapping[str, datetime]) -> None:
        started.set()
        # "a" is in flight until the test lets it end (a fixed sleep assumed it still was).
        await finish.wait()
        written.extend(batch)

    recorder = LastUsedRecorder(touch, interval=0.001)
    recorder.record("a", datetime.now().astimezone())
    runner = asyncio.create_task(recorder.run())
    await started.wait()
    runner.cancel()  # cancelled mid-write: the shielded write goes on
    recorder.record("b", datetime.now().astimezone())
    flushing = asyncio.create_task(recorder.flush())  # waits for "a", then writes "b"
    for _ in range(10):
        await asyncio.sleep(0)
    assert written == [] and not flushing.done()
    finish.set()
    await flushing
    assert written == ["a", "b"]
