"""A background loop of the running server that crashes is restarted, and /readyz and /metrics
say so (issue 11: a crashed loop used to be noticed by nobody)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.services.runtime import Runtime
from keyplane.services.supervisor import LoopStatus, Supervisor
from tests import scrape
from tests.conftest import ROOT_KEY, Database
from tests.services.test_supervisor import Gate


class Server:
    def __init__(self, client: httpx.AsyncClient, runtime: Runtime, gate: Gate) -> None:
        self.client = client
        self.runtime = runtime
        self.gate = gate

    async def until(self, name: str, status: LoopStatus) -> None:
        """Let the event loop run until the loop ``name`` is in ``status`` (no clock involved)."""
        for _ in range(10_000):
            if any(s.name == name and s.status is status for s in self.runtime.supervisor.states()):
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{name} never became {status}")


@pytest.fixture
async def server(sqlite_database: Database, clock: ManualClock) -> AsyncIterator[Server]:
    gate = Gate()
    app = create_app(
        sqlite_database.settings(), clock=clock, supervisor=Supervisor(sleep=gate.sleep)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Server(client, app.state.runtime, gate)


async def loop_metrics(server: Server, *names: str) -> dict[str, tuple[float, float]]:
    """(up, restarts) of each loop named, from a scrape of /metrics."""
    samples = scrape.parse((await server.client.get("/metrics")).text)
    return {
        name: (
            scrape.value(samples, "keyplane_background_loop_up", loop=name),
            scrape.value(samples, "keyplane_background_loop_restarts_total", loop=name),
        )
        for name in names
    }


async def test_every_background_loop_is_supervised_and_shown_in_metrics(server: Server) -> None:
    names = {s.name for s in server.runtime.supervisor.states()}
    assert {
        "ledger",
        "last_used",
        "management_last_used",
        "reservation_expiry",
        "replay_secret_erasure",
    } <= names
    # Restart counters are the process's (earlier tests' crashes are in them): up only here.
    loops = await loop_metrics(server, *names)
    assert {name: up for name, (up, _restarts) in loops.items()} == dict.fromkeys(names, 1.0)
    # A healthy process answers readiness exactly as before.
    assert (await server.client.get("/readyz")).json() == {"status": "ready"}


async def test_a_crashed_critical_loop_degrades_readiness_until_it_runs_again(
    server: Server,
) -> None:
    limiter = server.runtime.limiter
    crashed = asyncio.Event()

    async def broken_expire(now: datetime) -> None:
        crashed.set()
        raise RuntimeError("a defect in the expiry code")

    restarts_before = (await loop_metrics(server, "reservation_expiry"))["reservation_expiry"][1]
    limiter.expire = broken_expire  # type: ignore[method-assign]
    await crashed.wait()  # the expiry loop's own one-second period, once
    await server.gate.backoffs(1)

    ready = await server.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "degraded",
        "loops": {
            "reservation_expiry": {
                "status": "restarting",
                "critical": True,
                "restarts": 1,
                "last_error": "RuntimeError",
            }
        },
    }
    up, restarts = (await loop_metrics(server, "reservation_expiry"))["reservation_expiry"]
    assert (up, restarts - restarts_before) == (0, 1)

    del limiter.expire  # the instance attribute: the real method again
    server.gate.release()
    await server.until("reservation_expiry", LoopStatus.RUNNING)
    ready = await server.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "loops": {
            "reservation_expiry": {
                "status": "running",
                "critical": True,
                "restarts": 1,
                "last_error": "RuntimeError",
            }
        },
    }
    assert (await loop_metrics(server, "reservation_expiry"))["reservation_expiry"][0] == 1


async def test_a_crashed_loop_that_is_not_critical_leaves_the_instance_ready(
    server: Server,
) -> None:
    async def flaky() -> None:
        raise OSError("disk")

    server.runtime.supervisor.start("extra", flaky, critical=False)
    await server.gate.backoffs(1)
    ready = await server.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["loops"]["extra"]["status"] == "restarting"
