"""``concurrency.max_queued`` with verify's ``wait_ms``, through the API: wait, refuse, hand on."""

from __future__ import annotations

import asyncio

from keyplane.services.runtime import Runtime
from tests.conftest import Api


async def test_a_waiting_verify_gets_the_slot_its_holder_reports(api: Api) -> None:
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    queue = runtime.slot_queue
    assert queue is not None
    entered = asyncio.Event()
    enter = queue.enter

    async def noted(key_id: str, ticket: str, max_queued: int, wait: float) -> bool:
        result = await enter(key_id, ticket, max_queued, wait)
        entered.set()
        return result

    queue.enter = noted  # type: ignore[method-assign]
    key, data = await api.create_key(policy={"concurrency": {"max_parallel": 1, "max_queued": 1}})
    first = await api.verify(key, acquire_concurrency=True, request_id="first")
    assert first["code"] == "VALID", first
    waiter = asyncio.create_task(
        api.verify(key, acquire_concurrency=True, request_id="second", wait_ms=30_000)
    )
    async with asyncio.timeout(30):
        await entered.wait()
    assert not waiter.done()
    # The line is full: refused at once, with a hint; one that does not wait likewise.
    for wait_ms in (30_000, 0):
        refused = await api.verify(key, acquire_concurrency=True, wait_ms=wait_ms)
        assert refused["code"] == "CONCURRENCY_EXCEEDED", refused
        assert refused["retry_after"] == 1.0
    assert not waiter.done()
    response = await api.report(key_id=data["id"], request_id="first", cost=0)
    assert response.status_code == 201, response.text
    async with asyncio.timeout(30):
        second = await waiter
    assert second["code"] == "VALID", second
    assert second["request_id"] == "second"
    # Without max_queued, wait_ms changes nothing: refused at once as before.
    plain, _ = await api.create_key(policy={"concurrency": {"max_parallel": 1}})
    assert (await api.verify(plain, acquire_concurrency=True))["code"] == "VALID"
    again = await api.verify(plain, acquire_concurrency=True, wait_ms=30_000)
    assert again["code"] == "CONCURRENCY_EXCEEDED"
