"""The gRPC server starts and stops with the app, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import weakref

import grpc

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.grpc.gen.keyplane.v1 import keys_pb2 as pb
from keyplane.grpc.gen.keyplane.v1 import keys_pb2_grpc
from tests.conftest import Database
from tests.grpc_api.conftest import bearer


async def _serve_once(database: Database, clock: ManualClock) -> tuple[int, weakref.ref[object]]:
    app = create_app(database.settings(grpc_port=0), clock=clock)
    async with app.router.lifespan_context(app):
        port: int = app.state.grpc_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            page = await keys_pb2_grpc.KeysStub(channel).ListKeys(
                pb.ListKeysRequest(), metadata=bearer()
            )
            assert not page.has_more
        return port, weakref.ref(app.state.runtime)


async def test_the_grpc_port_is_released_and_the_runtime_collected_on_stop(
    sqlite_database: Database, clock: ManualClock
) -> None:
    port, runtime = await _serve_once(sqlite_database, clock)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free again
    # gRPC's completion-queue poller lets go of the server's last call objects on its own
    # schedule, a moment after stop under load: a leak is a reference still held after 10 s.
    deadline = time.monotonic() + 10
    while True:
        gc.collect()
        if runtime() is None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert runtime() is None, "a stopped runtime is still referenced by the gRPC server"
