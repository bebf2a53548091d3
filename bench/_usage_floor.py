"""The floor of durable usage reports: what this hardware and this server allow for ``POST
/v1/usage`` answered only once the report is committed, with nothing else around it.

A raw ASGI app under uvicorn with ``keyplane serve``'s options. For each report it reads the
body, parses the JSON, takes the request id, the cost (in integer micro-credits) and the token
counts, and waits for the report's group commit: one writer commits, as one transaction, every
report that arrived while the previous one was being written, then each report is answered 201
with its id. The table has the ledger's uniqueness rule (one row per key and request id). No
authentication, no validation beyond that, no budgets, windows, rollups or alerts: what
durability costs, not a product. ``bench/usage.py`` runs it next to Keyplane, on the same
database server, and prints Keyplane's CPU per report over this one's.

* SQLite: the standard library's ``sqlite3`` on a thread of its own, WAL, ``synchronous=FULL``
  (Keyplane's settings for the embedded database).
* PostgreSQL: asyncpg, one ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING`` per
  transaction, in the schema ``KEYPLANE_DATABASE_SCHEMA``.

Configured by the environment, as ``keyplane serve`` is: ``KEYPLANE_DATABASE_URL``,
``KEYPLANE_DATABASE_SCHEMA``, ``KEYPLANE_HOST``, ``KEYPLANE_PORT``. ``GET /readyz`` answers 200
once the table exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import uvicorn
from _floor_app import read_body, send_json  # bench/: this script's directory

TABLE = "usage_floor"
COLUMNS = "id, key_id, request_id, cost_micros, input_tokens, output_tokens, model, created_us"

Row = tuple[str, str, str, int, int, int, str | None, int]
Writer = Callable[[list[Row]], Awaitable[None]]


class GroupCommit:
    """Reports wait here for the next transaction; one writer commits them all at once."""

    def __init__(self, write: Writer) -> None:
        self._write = write
        self._pending: list[tuple[Row, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()

    async def append(self, row: Row) -> None:
        """Return once ``row`` is committed."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._wake.set()
        await future

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            try:
                await self._write([row for row, _ in batch])
            except Exception as exc:  # every waiter of the batch hears it
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for _, future in batch:
                    future.set_result(None)


async def sqlite_writer(url: str) -> Writer:
    path = url.removeprefix("sqlite:///")
    thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
    loop = asyncio.get_running_loop()

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, key_id TEXT NOT NULL,"
            " request_id TEXT NOT NULL, cost_micros INTEGER NOT NULL, input_tokens INTEGER"
            " NOT NULL, output_tokens INTEGER NOT NULL, model TEXT, created_us INTEGER NOT"
            " NULL, UNIQUE (key_id, request_id))"
        )
        return conn

    conn = await loop.run_in_executor(thread, connect)
    insert = f"INSERT OR IGNORE INTO {TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608

    def write_now(rows: list[Row]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(insert, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def write(rows: list[Row]) -> None:
        await loop.run_in_executor(thread, write_now, rows)

    return write


async def postgresql_writer(url: str, schema: str) -> Writer:
    import asyncpg  # only with PostgreSQL

    conn = await asyncpg.connect(url)
    table = f"{schema}.{TABLE}"
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, key_id text NOT NULL,"
        " request_id text NOT NULL, cost_micros bigint NOT NULL, input_tokens bigint NOT NULL,"
        " output_tokens bigint NOT NULL, model text, created_us bigint NOT NULL,"
        " UNIQUE (key_id, request_id))"
    )
    insert = (
        f"INSERT INTO {table} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"  # noqa: S608
        " ON CONFLICT DO NOTHING"
    )

    async def write(rows: list[Row]) -> None:
        async with conn.transaction():
            await conn.executemany(insert, rows)

    return write


def build_app(writer: Callable[[], Awaitable[Writer]]) -> Any:
    commits: GroupCommit | None = None
    tasks: list[asyncio.Task[None]] = []

    async def report(receive: Any, send: Any) -> None:
        try:
            document = json.loads(await read_body(receive))
            key_id, request_id = document["key_id"], document["request_id"]
            cost = round(float(document.get("cost", 0)) * 1_000_000)
            tokens_in = int(document.get("input_tokens", 0))
            tokens_out = int(document.get("output_tokens", 0))
            if not isinstance(key_id, str) or not isinstance(request_id, str):
                raise TypeError("ids are strings")
        except (ValueError, KeyError, TypeError):
            await send_json(send, 422, b'{"error": "bad report"}')
            return
        event_id = f"use_{random.getrandbits(96):024x}"
        model = document.get("model")
        created_us = time.time_ns() // 1000
        assert commits is not None
        await commits.append(
            (event_id, key_id, request_id, cost, tokens_in, tokens_out, model, created_us)
        )
        answer = {
            "id": event_id,
            "key_id": key_id,
            "duplicate": False,
            "recorded_at": datetime.now(UTC).isoformat(),
        }
        await send_json(send, 201, json.dumps(answer).encode())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal commits
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    commits = GroupCommit(await writer())
                    tasks.append(asyncio.create_task(commits.run()))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/v1/usage" and scope["method"] == "POST":
            await report(receive, send)
        elif scope["path"] == "/readyz":
            await send_json(send, 200, b'{"status": "ok"}')
        else:
            await send_json(send, 404, b"{}")

    return app


def main() -> None:
    from keyplane.cli.main import server_options
    from keyplane.settings import Settings

    settings = Settings()  # from the environment, as the Keyplane server it stands next to
    url = os.environ["KEYPLANE_DATABASE_URL"]

    async def writer() -> Writer:
        if url.startswith("sqlite:///"):
            return await sqlite_writer(url)
        return await postgresql_writer(url, settings.database_schema or "public")

    # `keyplane serve`'s own uvicorn options (its protocol, no access log, ...).
    uvicorn.run(build_app(writer), **server_options(settings))


if __name__ == "__main__":
    main()
