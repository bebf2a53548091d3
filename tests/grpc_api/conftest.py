"""A Keyplane app serving gRPC on a free port (its lifespan starts both), and a real client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.protobuf.message import Message

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.grpc.gen.envoy.service.auth.v3 import external_auth_pb2_grpc
from keyplane.grpc.gen.keyplane.v1 import keys_pb2_grpc
from tests.conftest import ROOT_KEY, Api, Database


@dataclass
class Grpc:
    """The REST client (for setup) and gRPC stubs generated from proto/, on one app."""

    api: Api
    channel: grpc.aio.Channel
    port: int

    @property
    def keys(self) -> keys_pb2_grpc.KeysStub:
        return keys_pb2_grpc.KeysStub(self.channel)

    @property
    def verifier(self) -> keys_pb2_grpc.VerifierStub:
        return keys_pb2_grpc.VerifierStub(self.channel)

    @property
    def authz(self) -> external_auth_pb2_grpc.AuthorizationStub:
        return external_auth_pb2_grpc.AuthorizationStub(self.channel)


def bearer(key: str = ROOT_KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def failure(call: object) -> grpc.aio.AioRpcError:
    """The error a call ends with (it must end with one)."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def keyplane_code(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("keyplane-code")


async def serve(database: Database, clock: ManualClock) -> AsyncIterator[Grpc]:
    app = create_app(database.settings(grpc_port=0), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        port = app.state.grpc_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Grpc(Api(client, app, clock, database), channel, port)


@pytest.fixture
async def rpc(database: Database, clock: ManualClock) -> AsyncIterator[Grpc]:
    """On SQLite and PostgreSQL."""
    async for served in serve(database, clock):
        yield served


@pytest.fixture
async def rpc_sqlite(sqlite_database: Database, clock: ManualClock) -> AsyncIterator[Grpc]:
    async for served in serve(sqlite_database, clock):
        yield served


def message(kind: type[Message], **fields: object) -> Message:
    return kind(**fields)
