"""An app that has stopped is garbage: nothing global keeps it, or its runtime, alive.

A handler closing over its app once made every app of the test run stay in memory (FastAPI
caches endpoints in a process-wide table), and the suite's per-test garbage collection grew
slower with each test: the run took three times as long.
"""

from __future__ import annotations

import gc
import weakref

import httpx

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from tests.conftest import ROOT_KEY, Database


async def _serve_once(database: Database, clock: ManualClock) -> tuple[weakref.ref[object], ...]:
    """Start an app, use it, stop it; weak references to it and its runtime."""
    app = create_app(database.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        # Touch the routes built at start-up, the docs page among them.
        assert (await client.get("/docs")).status_code == 200
        assert (await client.post("/v1/keys", json={"name": "k"})).status_code == 201
        return weakref.ref(app), weakref.ref(app.state.runtime)


async def test_a_stopped_app_and_its_runtime_are_collected(
    sqlite_database: Database, clock: ManualClock
) -> None:
    app, runtime = await _serve_once(sqlite_database, clock)
    gc.collect()
    assert app() is None, "a stopped app is still referenced"
    assert runtime() is None, "a stopped runtime is still referenced"
