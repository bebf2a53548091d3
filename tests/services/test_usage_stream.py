"""The usage stream's hub: filters, and a slow subscriber dropped with a notice (bounded)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from keyplane.errors import CapacityError
from keyplane.services.usage_stream import (
    NOTIFY_BYTES,
    Dropped,
    StreamFilter,
    StreamHub,
    UsageEvent,
    _notify_payloads,
)

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(n: int = 0, **fields: object) -> UsageEvent:
    values: dict[str, object] = {
        "id": f"use_{n}",
        "org_id": "org_a",
        "project_id": "proj_a",
        "key_id": "key_a",
        "owner": "acme",
        "request_id": None,
        "model": "gpt-4o",
        "cost_micros": 1_000,
        "input_tokens": 1,
        "output_tokens": 2,
        "latency_ms": 30,
        "status": 200,
        "recorded_at": AT,
    }
    values.update(fields)
    return UsageEvent(**values)  # type: ignore[arg-type]


async def test_a_subscriber_that_falls_behind_is_dropped_with_a_final_notice() -> None:
    hub = StreamHub(queue_limit=3, max_subscribers=10)
    slow = hub.subscribe(StreamFilter("org_a"))
    keeping_up = hub.subscribe(StreamFilter("org_a"))
    for n in range(10):
        hub.deliver([event(n)])
        assert (await keeping_up.next()) == event(n)
        assert len(slow._items) <= 3  # never more than its queue holds
    # It had three waiting and a fourth did not fit: those are gone, the notice is left.
    assert await slow.next() == Dropped("slow_consumer", missed=4)
    assert slow.dropped
    assert hub.subscribers == 1
    hub.deliver([event(11)])
    assert await slow.next(timeout=0) is None  # nothing after the notice
    assert await keeping_up.next() == event(11)


async def test_filters_pick_org_project_key_owner_and_minimum_cost() -> None:
    hub = StreamHub(queue_limit=100, max_subscribers=10)
    everything = hub.subscribe(StreamFilter("org_a"))
    expensive = hub.subscribe(StreamFilter("org_a", min_cost=5_000))
    owner_b = hub.subscribe(StreamFilter("org_a", owner="b"))
    project_b = hub.subscribe(StreamFilter("org_a", project_id="proj_b"))
    key_b = hub.subscribe(StreamFilter("org_a", key_id="key_b"))
    events = [
        event(1),
        event(2, cost_micros=5_000),
        event(3, owner="b"),
        event(4, project_id="proj_b", key_id="key_b"),
        event(5, org_id="org_other", cost_micros=10**9, owner="b"),
    ]
    hub.deliver(events)

    async def drained(subscription: object) -> list[str]:
        got = []
        while (item := await subscription.next(timeout=0)) is not None:  # type: ignore[attr-defined]
            got.append(item.id)
        return got

    assert await drained(everything) == ["use_1", "use_2", "use_3", "use_4"]
    assert await drained(expensive) == ["use_2"]
    assert await drained(owner_b) == ["use_3"]
    assert await drained(project_b) == ["use_4"]
    assert await drained(key_b) == ["use_4"]


def test_an_instance_serves_at_most_its_configured_streams() -> None:
    hub = StreamHub(queue_limit=1, max_subscribers=2)
    first = hub.subscribe(StreamFilter("org_a"))
    hub.subscribe(StreamFilter("org_a"))
    with pytest.raises(CapacityError):
        hub.subscribe(StreamFilter("org_a"))
    first.close()
    hub.subscribe(StreamFilter("org_a"))


def test_events_round_trip_and_notify_payloads_fit_postgres() -> None:
    many = [event(n, model="m" * 150) for n in range(200)]
    payloads = _notify_payloads(many)
    assert len(payloads) > 1
    assert all(len(p.encode()) < NOTIFY_BYTES for p in payloads)
    decoded = [UsageEvent.decode(item) for p in payloads for item in json.loads(p)]
    assert decoded == many


def test_the_sdk_parser_raises_at_a_drop_notice_and_skips_comments() -> None:
    from keyplane.client import StreamDroppedError
    from keyplane.client._stream import Parser

    lines = [
        ": keyplane usage stream",
        "",
        "event: usage",
        "id: use_1",
        'data: {"type": "usage", "id": "use_1", "key_id": "key_a", "project_id": "proj_a",'
        ' "recorded_at": "2026-03-01T12:00:00Z", "cost": 0.1}',
        "",
        ": keep-alive",
        "",
        "event: dropped",
        'data: {"type": "dropped", "reason": "slow_consumer", "missed": 7}',
        "",
    ]
    events = Parser().feed(lines)
    first = next(events)
    assert (first.id, str(first.cost)) == ("use_1", "0.1")
    with pytest.raises(StreamDroppedError) as dropped:
        next(events)
    assert dropped.value.missed == 7


async def test_a_broadcast_message_is_decoded_only_when_someone_here_subscribes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every instance hears every report of the deployment: with no subscriber here, the
    # message is not even decoded (a malformed one would be warned about if it were).
    hub = StreamHub(queue_limit=3, max_subscribers=10)
    with caplog.at_level("WARNING"):
        hub.hear(b"not json")
    assert "malformed" not in caplog.text
    subscription = hub.subscribe(StreamFilter("org_a"))
    with caplog.at_level("WARNING"):
        hub.hear(b"not json")
    assert "ignored a malformed usage stream message" in caplog.text
    hub.hear(json.dumps([event(1).encode()]))
    assert await subscription.next(timeout=0) == event(1)
