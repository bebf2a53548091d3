"""Queued concurrency (``concurrency.max_queued`` and verify's ``wait_ms``): exact and FIFO.

1,000 concurrent verifies wait for 5 slots with 20 places in line, on memory, on Redis, and on
Redis through two instances (own connections, own pub/sub listener): exactly 5 hold a slot,
exactly 20 queue, the other 975 are refused at once; then each released slot goes to the
oldest waiter, whichever instance it waits on and whichever instance releases the slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from keyplane.domain.admission import AdmissionResult, Settlement
from keyplane.domain.decisions import Code
from keyplane.limits.queue import (
    RETRY_AFTER_SECONDS,
    MemorySlotQueue,
    RedisSlotQueue,
    admit_queued,
)
from tests.limits.harness import NOW, Limits, admission, memory_limits, redis_limits

PARALLEL, QUEUED, CALLERS = 5, 20, 1000
#: Long enough never to run out on a loaded machine: every wake-up here is an event.
PATIENT = 60.0


@dataclass
class Instance:
    limits: Limits
    queue: MemorySlotQueue | RedisSlotQueue
    #: Tickets in the order they entered the line (entries are recorded as they succeed).
    entered: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def _record_entries(instance: Instance, order: list[str]) -> None:
    """Note each request id as its ticket enters the line, in the order the queue took it."""
    queue = instance.queue
    enter = queue.enter

    async def recorded(key_id: str, ticket: str, max_queued: int, wait: float) -> bool:
        entered = await enter(key_id, ticket, max_queued, wait)
        if entered:
            order.append(ticket.rpartition("#")[0])  # the ticket is "<request id>#<random>"
            instance.changed.set()
        return entered

    queue.enter = recorded  # type: ignore[method-assign]


@pytest.fixture(params=["memory", "redis", "two-redis"])
async def instances(
    request: pytest.FixtureRequest, clients: Callable[..., Redis], prefix: str
) -> AsyncIterator[list[Instance]]:
    if request.param == "memory":
        yield [Instance(memory_limits(), MemorySlotQueue())]
        return
    made = []
    for _ in range(1 if request.param == "redis" else 2):
        client = clients()
        made.append(Instance(redis_limits(client, prefix), RedisSlotQueue(client, prefix)))
    yield made
    for instance in made:
        assert isinstance(instance.queue, RedisSlotQueue)
        await instance.queue.aclose()


async def _verify(instance: Instance, request_id: str, wait: float) -> AdmissionResult:
    ask = admission(request_id, max_parallel=PARALLEL)
    return await admit_queued(
        instance.limits.limiter, instance.queue, ask, lambda: NOW, QUEUED, wait
    )


async def _line(queue: MemorySlotQueue | RedisSlotQueue) -> list[str]:
    """The request ids in line, oldest first (tickets are "<request id>#<random>")."""
    if isinstance(queue, MemorySlotQueue):
        tickets = list(queue._queues["key_1"])
    else:
        members = await queue._redis.zrange(queue._queue("key_1"), 0, -1)
        tickets = [m.decode().partition("|")[2] for m in members]
    return [ticket.rpartition("#")[0] for ticket in tickets]


async def _until(condition: Callable[[], bool], events: list[asyncio.Event]) -> None:
    """Wait (on events, generously bounded) until ``condition`` holds."""
    async with asyncio.timeout(PATIENT):
        while not condition():
            waits = [asyncio.ensure_future(event.wait()) for event in events]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
            for event in events:
                event.clear()


async def test_exactly_parallel_hold_exactly_queued_wait_and_slots_go_in_order(
    instances: list[Instance],
) -> None:
    order: list[str] = []
    for instance in instances:
        _record_entries(instance, order)
    done = asyncio.Event()
    tasks: dict[str, asyncio.Task[AdmissionResult]] = {}
    for i in range(CALLERS):
        request_id = f"r{i}"
        task = asyncio.create_task(_verify(instances[i % len(instances)], request_id, PATIENT))
        task.add_done_callback(lambda _: done.set())
        tasks[request_id] = task
    events = [done, *(instance.changed for instance in instances)]

    def finished() -> list[str]:
        return [rid for rid, task in tasks.items() if task.done()]

    await _until(lambda: len(finished()) == CALLERS - QUEUED and len(order) == QUEUED, events)
    results = {rid: tasks[rid].result() for rid in finished()}
    holders = [rid for rid, result in results.items() if result.refusal is None]
    refused = [result for result in results.values() if result.refusal is not None]
    assert len(holders) == PARALLEL
    assert {r.refusal for r in refused} == {Code.CONCURRENCY_EXCEEDED}
    assert {r.retry_after for r in refused} == {RETRY_AFTER_SECONDS}
    waiting = sorted(set(tasks) - set(results))
    assert sorted(order) == waiting
    # The line as the queue holds it (the order entries returned in may differ on Redis).
    order = await _line(instances[0].queue)
    assert sorted(order) == waiting

    # Release one slot at a time, from alternating instances: the oldest waiter gets it.
    admitted_in_turn = []
    for turn in range(QUEUED):
        releaser = instances[turn % len(instances)]
        await releaser.limits.settle(Settlement("key_1", holders.pop(0), 0, 0), NOW)
        await releaser.queue.released("key_1")
        count = CALLERS - QUEUED + turn + 1
        await _until(lambda count=count: len(finished()) == count, [done])  # type: ignore[misc]
        (newest,) = [rid for rid in finished() if rid not in results and rid not in holders]
        assert tasks[newest].result().refusal is None
        results[newest] = tasks[newest].result()
        holders.append(newest)
        admitted_in_turn.append(newest)
    assert admitted_in_turn == order
    # The line is empty again, and the slots are still exactly full.
    assert not await instances[0].queue.waiting("key_1")
    extra = await instances[-1].limits.admit(admission("extra", max_parallel=PARALLEL))
    assert extra.refusal is Code.CONCURRENCY_EXCEEDED


async def test_a_waiter_that_runs_out_of_time_is_refused_and_leaves_the_line(
    instances: list[Instance],
) -> None:
    for i in range(PARALLEL):
        assert (await _verify(instances[0], f"h{i}", 0)).refusal is None
    # Nobody waits: a verify that may not wait is refused at once, without a ticket.
    now_refused = await _verify(instances[0], "no-wait", 0)
    assert now_refused.refusal is Code.CONCURRENCY_EXCEEDED
    late = await _verify(instances[-1], "late", 1.0)
    assert late.refusal is Code.CONCURRENCY_EXCEEDED
    assert late.retry_after == RETRY_AFTER_SECONDS
    assert not await instances[0].queue.waiting("key_1")
    # A freed slot is there for the next one at once.
    await instances[0].limits.settle(Settlement("key_1", "h0", 0, 0), NOW)
    assert (await _verify(instances[-1], "next", 0)).refusal is None
