"""``keyplane serve --grpc-port``: the real server answers gRPC beside HTTP, and stops both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx

from keyplane.grpc.gen.keyplane.v1 import keys_pb2, keys_pb2_grpc
from tests.conftest import PG_URL, REDIS_URL, ROOT_KEY, SERVER_SECRET, free_port
from tests.e2e.conftest import ServerFactory, run_cli


def test_serve_answers_grpc_beside_http(start_server: ServerFactory, tmp_path: Path) -> None:
    grpc_port = free_port()
    server = start_server(
        {
            "KEYPLANE_DATABASE_URL": f"sqlite:///{tmp_path / 'kp.db'}",
            "KEYPLANE_SECRET": SERVER_SECRET,
            "KEYPLANE_ROOT_KEY": ROOT_KEY,
        },
        args=("--grpc-port", str(grpc_port)),
    )
    created = httpx.post(
        f"{server.base_url}/v1/keys",
        json={"name": "e2e"},
        headers={"Authorization": f"Bearer {ROOT_KEY}"},
    )
    assert created.status_code == 201, created.text

    async def verify() -> keys_pb2.VerifyResponse:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            answer: keys_pb2.VerifyResponse = await keys_pb2_grpc.VerifierStub(channel).Verify(
                keys_pb2.VerifyRequest(key=created.json()["key"]),
                metadata=(("authorization", f"Bearer {ROOT_KEY}"),),
                timeout=30,
            )
            return answer

    answer = asyncio.run(verify())
    assert answer.valid and answer.key_id == created.json()["data"]["id"]


def test_grpc_with_several_workers_is_refused(tmp_path: Path) -> None:
    env = {
        "KEYPLANE_DATABASE_URL": PG_URL,
        "KEYPLANE_REDIS_URL": REDIS_URL,
        "KEYPLANE_SECRET": SERVER_SECRET,
        "KEYPLANE_ROOT_KEY": ROOT_KEY,
    }
    result = run_cli("serve", "--workers", "2", "--grpc-port", "0", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--grpc-port" in result.stderr and "Traceback" not in result.stderr
