"""What the SSRF guard costs a webhook POST: ``OutboundGuard.post`` against plain httpcore.

Both send the same small JSON body to the same local keep-alive receiver, with the same number
of requests in flight, for the same time. The floor is an httpcore connection pool without the
guard's resolution, address check and response cap; the ratio is the guard's throughput over
the floor's, measured in the same run. A third line shows httpx's ``AsyncClient`` for
reference (what a naive delivery worker would use).

    .venv/bin/python bench/outbound.py --duration 3 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from ipaddress import ip_network

import httpcore
import httpx

from keyplane.services.outbound import OutboundGuard

BODY = b'{"type":"key.created","data":{"id":"key_01","owner":"cust_1"}}'
ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


_HANDLERS: set[asyncio.Task[None]] = set()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # A keep-alive receiver: read each request (head + Content-Length body), answer 204.
    task = asyncio.current_task()
    if task is not None:
        _HANDLERS.add(task)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()
        if task is not None:
            _HANDLERS.discard(task)


async def _run(
    name: str, send: Callable[[], Awaitable[None]], duration: float, concurrency: int
) -> float:
    done = 0
    deadline = time.monotonic() + duration

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await send()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = done / (time.monotonic() - started)
    print(f"{name:<34} {rate:10.0f} posts/s")
    return rate


async def main(duration: float, concurrency: int) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    headers = {"content-type": "application/json", "webhook-id": "msg_1"}

    floor_pool = httpcore.AsyncConnectionPool(max_connections=100)
    floor_headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def floor() -> None:
        response = await floor_pool.request("POST", url, headers=floor_headers, content=BODY)
        assert response.status == 204

    guard = OutboundGuard(allow_http=True, allow_networks=[ip_network("127.0.0.0/8")])

    async def guarded() -> None:
        result = await guard.post(url, BODY, headers)
        assert result.ok, result.error

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))

    async def plain_httpx() -> None:
        response = await client.post(url, content=BODY, headers=headers)
        assert response.status_code == 204

    try:
        for warm in (floor, guarded, plain_httpx):
            await warm()
        base = await _run("floor: httpcore pool, no guard", floor, duration, concurrency)
        mine = await _run("OutboundGuard.post", guarded, duration, concurrency)
        await _run("reference: httpx.AsyncClient", plain_httpx, duration, concurrency)
        print(f"guard / floor: {mine / base:.2f}")
    finally:
        await floor_pool.aclose()
        await guard.aclose()
        await client.aclose()
        server.close()
        for handler in list(_HANDLERS):
            handler.cancel()
        await asyncio.gather(*_HANDLERS, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    args = parser.parse_args()
    asyncio.run(main(args.duration, args.concurrency))
