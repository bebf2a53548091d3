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

    def slow(touch):  # type: ignore[no-untyped-def]
        async def write(batch: Mapping[str, datetime]) -> None:
            await asyncio.sleep(0.05)  # a write still running when stop() begins
            closed_while_writing.append(store_closed)
            await touch(batch)

        return write

    runtime.store.close = close  # type: ignore[method-assign]
    runtime.last_used._touch = slow(runtime.last_used._touch)  # type: ignore[method-assign]
    runtime.management_last_used._touch = slow(  # type: ignore[method-assign]
        runtime.management_last_used._touch
    )
    runtime.last_used.record("key_x", clock.now())
    runtime.management_last_used.record("mk_x", clock.now())
    await runtime.stop()
    assert closed_while_writing == [False, False]
    assert runtime.last_used.pending == runtime.management_last_used.pending == 0


async def test_a_flush_in_flight_is_awaited_by_the_next_one() -> None:
    written: list[str] = []
    started = asyncio.Event()

    async def touch(batch: Mapping[str, datetime]) -> None:
        started.set()
        await asyncio.sleep(0.05)
        written.extend(batch)

    recorder = LastUsedRecorder(touch, interval=0.001)
    recorder.record("a", datetime.now().astimezone())
    runner = asyncio.create_task(recorder.run())
    await started.wait()
    runner.cancel()  # cancelled mid-write: the shielded write goes on
    recorder.record("b", datetime.now().astimezone())
    await recorder.flush()  # waits for "a" to be written, then writes "b"
    assert written == ["a", "b"]
