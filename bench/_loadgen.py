"""Fallback HTTP load generator for ``bench/verify.py``, used when ``wrk`` is not installed.

Run as its own process (never imported by the server): ``--processes`` worker processes, each
an asyncio event loop (uvloop when installed) driving ``--concurrency / --processes``
keep-alive connections, closed loop (a connection sends its next request when the previous
answer arrived). It prints the same ``KEYPLANE_BENCH ...`` line as ``bench/wrk_verify.lua``.

It speaks HTTP/1.1 directly over asyncio streams, with the requests prepared up front, rather
than through httpx: httpx's connection pool collapses at this concurrency (measured on a
2-CPU box against ``/healthz``: ~500 req/s with 8 connections, ~66 req/s with 64, where this
client does ~3,300). It is still slower than wrk, so on a small machine it takes more CPU
from the server, and its figures are a lower bound on what the server can do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

VALID = b'"valid": true'


@dataclass
class Job:
    host: str
    port: int
    requests: list[bytes]
    first_slot: int
    slot_stride: int
    connections: int
    duration: float
    check: bool


@dataclass
class Tally:
    latencies_us: list[int] = field(default_factory=list)
    errors: int = 0
    checked: int = 0
    invalid: int = 0
    elapsed: float = 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL (http://host:port)")
    parser.add_argument("--mode", choices=("verify", "healthz"), required=True)
    parser.add_argument("--keys-file", type=Path, help="one key per line (verify mode)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--check", action="store_true", help="count verdicts not valid")
    return parser.parse_args()


def prepare_requests(mode: str, host: str, keys_file: Path | None) -> list[bytes]:
    """Every request as raw HTTP/1.1 bytes, ready to write."""
    if mode == "healthz":
        return [f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()]
    if keys_file is None:
        raise SystemExit("--keys-file is required in verify mode")
    root_key = os.environ.get("KEYPLANE_BENCH_ROOT_KEY", "")
    prepared = []
    for key in keys_file.read_text().split():
        body = json.dumps({"key": key}).encode()
        head = (
            f"POST /v1/verify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {root_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        prepared.append(head.encode() + body)
    return prepared


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request, read one response; ``(status, body)``."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def connection_loop(job: Job, slot: int, tally: Tally) -> None:
    deadline = time.perf_counter() + job.duration
    position = slot
    reader, writer = await asyncio.open_connection(job.host, job.port)
    try:
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            request = job.requests[position % len(job.requests)]
            position += job.slot_stride
            try:
                status, body = await exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                tally.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(job.host, job.port)
                continue
            tally.latencies_us.append(int((time.perf_counter() - started) * 1_000_000))
            if not 200 <= status < 400:
                tally.errors += 1
            if job.check:
                tally.checked += 1
                if status != 200 or VALID not in body:
                    tally.invalid += 1
    finally:
        writer.close()


async def drive(job: Job) -> Tally:
    tally = Tally()
    started = time.perf_counter()
    slots = range(job.first_slot, job.first_slot + job.connections)
    await asyncio.gather(*(connection_loop(job, slot, tally) for slot in slots))
    tally.elapsed = time.perf_counter() - started
    return tally


def event_loop_runner() -> Callable[[Coroutine[Any, Any, Tally]], Tally]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def run_job(job: Job) -> Tally:
    return event_loop_runner()(drive(job))


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def main() -> None:
    args = parse_args()
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = prepare_requests(args.mode, url.netloc, args.keys_file)
    processes = max(1, min(args.processes, args.concurrency))
    shares = split(args.concurrency, processes)
    jobs = [
        Job(
            host,
            port,
            requests,
            sum(shares[:i]),
            args.concurrency,
            share,
            args.duration,
            args.check,
        )
        for i, share in enumerate(shares)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        tallies = pool.map(run_job, jobs)
    latencies = sorted(value for tally in tallies for value in tally.latencies_us)
    elapsed = max(tally.elapsed for tally in tallies)
    figures = {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1_000_000),
        "p50_us": percentile(latencies, 50),
        "p90_us": percentile(latencies, 90),
        "p99_us": percentile(latencies, 99),
        "max_us": latencies[-1] if latencies else 0,
        "errors": sum(tally.errors for tally in tallies),
        "checked": sum(tally.checked for tally in tallies),
        "invalid": sum(tally.invalid for tally in tallies),
    }
    print("KEYPLANE_BENCH " + " ".join(f"{name}={value}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
