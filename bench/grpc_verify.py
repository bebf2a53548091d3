"""gRPC verify next to HTTP verify, in the same run, against the same server and key.

One ``keyplane serve --grpc-port`` (a subprocess, SQLite in a temporary directory) serves both.
This process then drives, for ``--duration`` seconds each and with ``--concurrency`` calls in
flight, ``POST /v1/verify`` over HTTP/1.1 (one keep-alive connection per call in flight,
written and read on raw asyncio streams: httpx's pool tops out near 66 req/s on two cores, see
bench/README.md, which would measure the client) and
``keyplane.v1.Verifier/Verify`` over gRPC (one grpc.aio channel, HTTP/2), with the same key and
the same management key, and prints calls/s and p50/p99 latency of each and the gRPC/HTTP
ratio. The HTTP figure is the floor the gRPC one is read against; both share the machine, the
server and this client process, so the ratio is what to read, not the absolute numbers.

Run::

    .venv/bin/python bench/grpc_verify.py
    .venv/bin/python bench/grpc_verify.py --duration 3 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
from _server import free_port, start_server

from keyplane.grpc.gen.keyplane.v1 import keys_pb2 as pb
from keyplane.grpc.gen.keyplane.v1 import keys_pb2_grpc


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per protocol (5)")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight (32)")
    return parser.parse_args()


async def drive(
    call: Callable[[], Awaitable[bool]], duration: float, concurrency: int
) -> dict[str, float]:
    """Calls/s and latency percentiles of ``call`` run by ``concurrency`` workers."""
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < stop:
            started = time.perf_counter()
            ok = await call()
            latencies.append(time.perf_counter() - started)
            failures += not ok

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    if failures:
        raise SystemExit(f"{failures} verify calls did not answer VALID")
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "calls": len(latencies),
    }


class RawHttp:
    """One keep-alive HTTP/1.1 connection sending the same ``POST /v1/verify`` each time."""

    def __init__(self, port: int, request: bytes) -> None:
        self._port = port
        self._request = request
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def verify(self) -> bool:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._streams
        writer.write(self._request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200") and b'"valid": true' in body

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()


def verify_request(key: str, root_key: str) -> bytes:
    body = json.dumps({"key": key}).encode()
    head = (
        "POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {root_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run(args: argparse.Namespace, url: str, grpc_port: int, root_key: str) -> None:
    created = httpx.post(
        url + "/v1/keys", json={"name": "bench"}, headers={"Authorization": f"Bearer {root_key}"}
    )
    created.raise_for_status()
    key = created.json()["key"]
    port = int(url.rsplit(":", 1)[1])
    request = verify_request(key, root_key)
    connections = [RawHttp(port, request) for _ in range(args.concurrency)]
    free = list(connections)

    async def http_verify() -> bool:
        connection = free.pop()
        try:
            return await connection.verify()
        finally:
            free.append(connection)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = keys_pb2_grpc.VerifierStub(channel)
        metadata = (("authorization", f"Bearer {root_key}"),)
        message = pb.VerifyRequest(key=key)

        async def grpc_verify() -> bool:
            answer = await stub.Verify(message, metadata=metadata)
            return bool(answer.valid)

        # Warm both paths (connections, the key cache) before timing either.
        for _ in range(50):
            assert await http_verify() and await grpc_verify()
        http_figures = await drive(http_verify, args.duration, args.concurrency)
        grpc_figures = await drive(grpc_verify, args.duration, args.concurrency)
    for connection in connections:
        connection.close()

    print(f"verify, one key, {args.concurrency} in flight, {args.duration:g} s each")
    for name, figures in (
        ("HTTP POST /v1/verify", http_figures),
        ("gRPC Verifier/Verify", grpc_figures),
    ):
        print(
            f"  {name:22} {figures['calls_per_s']:9.0f} calls/s   "
            f"p50 {figures['p50_ms']:6.2f} ms   p99 {figures['p99_ms']:6.2f} ms   "
            f"({figures['calls']:.0f} calls)"
        )
    ratio = grpc_figures["calls_per_s"] / http_figures["calls_per_s"]
    print(f"  gRPC/HTTP throughput ratio: {ratio:.2f}")


def main() -> None:
    args = parse_args()
    root_key = secrets.token_urlsafe(32)
    grpc_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(Path(tmp), root_key, KEYPLANE_GRPC_PORT=str(grpc_port))
        try:
            asyncio.run(run(args, url, grpc_port, root_key))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
