"""Shared fixtures.

``backend`` runs a test against SQLite always and against PostgreSQL when it is reachable.
With ``CI=true`` an unreachable PostgreSQL fails the run instead of skipping: a green CI must
mean the PostgreSQL path was exercised.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import gc
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiosqlite
import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, settings

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from keyplane.settings import Settings, to_async_url
from keyplane.store.migrate import head_revision, migrate
from keyplane.store.unit import create_engine

ROOT_KEY = "root-key-for-tests-" + "x" * 24
SERVER_SECRET = "server-secret-for-tests-" + "y" * 24
#: A fixed vault master key (base64 of 32 bytes) so vault tests can seal and open secrets.
VAULT_KEY = base64.b64encode(bytes(range(32))).decode("ascii")
PG_URL = os.environ.get("KEYPLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"

# Hypothesis's per-example deadline (200 ms) and its too-slow health check are timing
# assertions under a second: on two cores shared with a second copy of the suite they fail
# for reasons that have nothing to do with the code. Example counts still bound each test.
settings.register_profile("keyplane", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("keyplane")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


REDIS_URL = "redis://127.0.0.1:6379/0"


def require_redis() -> None:
    if _reachable("127.0.0.1", 6379):
        return
    message = "Redis is not reachable on 127.0.0.1:6379"
    if IN_CI:
        pytest.fail(message + " (CI=true: failing instead of skipping)")
    pytest.skip(message)


def _postgres_address() -> tuple[str, int]:
    """Host and port of ``PG_URL``: the guard probes the server the tests will connect to."""
    parts = urlsplit(PG_URL)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def require_postgres() -> None:
    host, port = _postgres_address()
    if _reachable(host, port):
        return
    message = f"PostgreSQL is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: failing instead of skipping)")
    pytest.skip(message)


@dataclass(frozen=True)
class Database:
    name: str
    url: str
    schema: str | None = None

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": self.url,
            "database_schema": self.schema,
            "secret": SERVER_SECRET,
            "root_key": ROOT_KEY,
            "vault_key": VAULT_KEY,
            # Tests flush explicitly, so nothing depends on a background timer's luck.
            "last_used_flush_seconds": 3600,
            # Tests run jobs explicitly (JobRunner.run_once, the handlers): the background
            # runner's first tick at start finds nothing due, and it does not tick again.
            "jobs_poll_seconds": 300,
            # A test process starts hundreds of apps: freezing each one's heap would keep
            # every one of them until the end (and make the leak check's collections slower).
            "gc_freeze": False,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]


async def pg_execute(statement: str) -> None:
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A new, empty PostgreSQL schema, dropped with everything in it afterwards."""
    require_postgres()
    schema = f"kp_test_{secrets.token_hex(6)}"
    asyncio.run(pg_execute(f"CREATE SCHEMA {schema}"))
    try:
        yield schema
    finally:
        asyncio.run(pg_execute(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty database at head on each backend (see the two helpers below)."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path)
        return
    with migrated_postgres_schema() as schema:
        yield Database("postgres", PG_URL, schema)


#: Migrated PostgreSQL schemas this test process emptied after use, ready for the next test.
_PG_POOL: list[str] = []
#: Each pooled schema's catalog fingerprint when it was migrated.
_PG_SHAPES: dict[str, str] = {}

# Everything in a schema's catalog that a test could change behind the migrations' back:
# columns, indexes, constraints, triggers, functions and the Alembic revision.
_SHAPE_QUERY = """
SELECT md5(string_agg(item, ',' ORDER BY item)) FROM (
  SELECT 'c:' || table_name || '.' || column_name || ':' || data_type || ':' || is_nullable
         || ':' || coalesce(column_default, '') AS item
    FROM information_schema.columns WHERE table_schema = $1
  UNION ALL SELECT 'i:' || indexdef FROM pg_indexes WHERE schemaname = $1
  UNION ALL SELECT 'k:' || conrelid::regclass || ':' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = $1::regnamespace
  UNION ALL SELECT 't:' || tgname FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
    WHERE r.relnamespace = $1::regnamespace AND NOT t.tgisinternal
  UNION ALL SELECT 'f:' || proname FROM pg_proc WHERE pronamespace = $1::regnamespace
) shape
"""


@contextlib.contextmanager
def migrated_postgres_schema() -> Iterator[str]:
    """A PostgreSQL schema at head with no rows, reused across this process's tests.

    Migrating a schema costs seconds on a loaded machine, emptying one a few milliseconds: a
    schema goes back to the pool with every row deleted, unless the test changed its shape
    (a trigger, a dropped column, another revision), and then it is dropped. The runtime's own
    migration finds it at head. Tests of the migrations start from ``postgres_schema()``.
    """
    require_postgres()
    schema = _PG_POOL.pop() if _PG_POOL else asyncio.run(_new_migrated_schema())
    try:
        yield schema
    finally:
        if asyncio.run(_emptied(schema)):
            _PG_POOL.append(schema)
        else:
            _PG_SHAPES.pop(schema, None)
            asyncio.run(pg_execute(f"DROP SCHEMA {schema} CASCADE"))


async def _new_migrated_schema() -> str:
    schema = f"kp_test_{secrets.token_hex(6)}"
    await pg_execute(f"CREATE SCHEMA {schema}")
    if not _PG_SHAPES:
        atexit.register(_drop_pooled_schemas)
    engine = create_engine(to_async_url(PG_URL), schema)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(PG_URL)
    try:
        _PG_SHAPES[schema] = await conn.fetchval(_SHAPE_QUERY, schema)
    finally:
        await conn.close()
    return schema


async def _emptied(schema: str) -> bool:
    """Delete every row of ``schema``'s tables; False when its shape is no longer head's."""
    conn = await asyncpg.connect(PG_URL)
    try:
        if await conn.fetchval(_SHAPE_QUERY, schema) != _PG_SHAPES.get(schema):
            return False
        versions = await conn.fetch(f"SELECT version_num FROM {schema}.alembic_version")  # noqa: S608
        if [row[0] for row in versions] != [head_revision()]:
            return False
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables"
            " WHERE schemaname = $1 AND tablename <> 'alembic_version'",
            schema,
        )
        # Replica mode skips the foreign keys' triggers: the tables empty in any order. The
        # names are this module's own schema and the catalog's tables, never input.
        statements = "".join(f'DELETE FROM {schema}."{row[0]}";' for row in tables)  # noqa: S608
        await conn.execute(
            f"SET session_replication_role = replica;{statements}"
            "SET session_replication_role = DEFAULT;"
        )
        return True
    finally:
        await conn.close()


def _drop_pooled_schemas() -> None:
    async def drop() -> None:
        while _PG_POOL:
            schema = _PG_POOL.pop()
            with contextlib.suppress(Exception):
                await pg_execute(f"DROP SCHEMA {schema} CASCADE")

    if _PG_POOL:
        asyncio.run(drop())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the pooled schemas when the session ends: xdist workers do not always get to run
    their ``atexit`` hooks, and each full run used to leave a schema or two behind."""
    _drop_pooled_schemas()


_SQLITE_TEMPLATE: list[Path] = []


def migrated_sqlite(directory: Path) -> Database:
    """An empty SQLite database at head, copied from one migrated once per test process.

    Migrating twenty revisions costs a fifth of a second, paid by every test that starts a
    runtime; a copy costs a millisecond, and the runtime's own migration then finds nothing to
    do. Tests of the migrations themselves start from an empty file (tests/store).
    """
    if not _SQLITE_TEMPLATE:
        template = Path(tempfile.mkdtemp(prefix="keyplane-template-")) / "keyplane.db"
        asyncio.run(_migrate_sqlite(template))
        atexit.register(shutil.rmtree, template.parent, True)
        _SQLITE_TEMPLATE.append(template)
    target = directory / "keyplane.db"
    shutil.copyfile(_SQLITE_TEMPLATE[0], target)
    return Database("sqlite", f"sqlite:///{target}")


async def _migrate_sqlite(path: Path) -> None:
    engine = create_engine(to_async_url(f"sqlite:///{path}"))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def postgres_database() -> Iterator[Database]:
    """A fresh PostgreSQL schema at head only (tests of several instances on one server)."""
    with migrated_postgres_schema() as schema:
        yield Database("postgres", PG_URL, schema)


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    return migrated_sqlite(tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@dataclass
class Api:
    """An in-process Keyplane with an httpx client authenticated as root."""

    client: httpx.AsyncClient
    app: object
    clock: ManualClock
    database: Database

    async def create_key(self, **fields: object) -> tuple[str, dict[str, object]]:
        body = {"name": "test key", **fields}
        response = await self.client.post("/v1/keys", json=body)
        assert response.status_code == 201, response.text
        payload = response.json()
        return payload["key"], payload["data"]

    async def verify(self, key: str, **fields: object) -> dict[str, object]:
        response = await self.client.post("/v1/verify", json={"key": key, **fields})
        assert response.status_code == 200, response.text
        result: dict[str, object] = response.json()
        return result

    async def report(self, idempotency_key: str | None = None, **fields: object) -> httpx.Response:
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return await self.client.post("/v1/usage", json=fields, headers=headers)

    async def management_key(self, *scopes: str, **fields: object) -> str:
        body = {"name": "scoped", "scopes": list(scopes), **fields}
        response = await self.client.post("/v1/management-keys", json=body)
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key

    def as_key(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def api(database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    app = create_app(database.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, database)


def _sqlite_threads() -> list[threading.Thread]:
    worker = aiosqlite.core._connection_worker_thread
    return [
        t for t in threading.enumerate() if t.is_alive() and getattr(t, "_target", None) is worker
    ]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what the imports and collection built into the collector's permanent generation.

    ``no_leaked_sqlite_connections`` runs a full collection after every test; without this,
    each one walks the whole heap of FastAPI, SQLAlchemy, hypothesis and schemathesis objects
    (about 120 ms a test here), which lives until the process ends anyway.
    """
    gc.collect()
    gc.freeze()


#: The test running now, as Redis connections made in it remember (see below).
_RUNNING_TEST = ["(collection)"]


def _redis_connections_name_their_test() -> None:
    """Make a Redis connection's repr name the test that opened it.

    A connection left open is reported (``unclosed Connection ...``, a ResourceWarning) by
    the garbage collection that finds it, which can be a later test's: the repr then says
    which test made it. Test instrumentation only; the server's connections are untouched.
    """
    from redis.asyncio.connection import AbstractConnection, Connection

    init = AbstractConnection.__init__
    pieces = Connection.repr_pieces
    finalize = AbstractConnection.__del__

    def init_noting_the_test(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.kp_opened_in = _RUNNING_TEST[0]  # type: ignore[attr-defined]

    def pieces_with_the_test(self: Connection) -> list[tuple[str, Any]]:
        return [*pieces(self), ("opened_in", getattr(self, "kp_opened_in", "?"))]

    def finalize_naming_the_test(self: AbstractConnection, *args: Any) -> None:
        if getattr(self, "_writer", None) is not None:
            opened_in = getattr(self, "kp_opened_in", "?")
            warnings.warn(
                f"Redis connection left open by {opened_in}", ResourceWarning, stacklevel=2
            )
        finalize(self, *args)

    AbstractConnection.__init__ = init_noting_the_test  # type: ignore[method-assign]
    AbstractConnection.__del__ = finalize_naming_the_test  # type: ignore[method-assign]
    Connection.repr_pieces = pieces_with_the_test  # type: ignore[method-assign]


_redis_connections_name_their_test()


@pytest.fixture(autouse=True)
def no_leaked_sqlite_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test that leaves a SQLite connection open.

    aiosqlite runs each connection in a non-daemon thread: one left open would keep the test
    process alive after the last test, hanging CI instead of failing it. The pure domain tests
    cannot open one (test_purity), so they skip the costly garbage collection.
    """
    _RUNNING_TEST[0] = request.node.nodeid
    if request.node.path.parent.name == "domain":
        yield
        return
    before = set(_sqlite_threads())
    yield
    gc.collect()  # surface unclosed-resource warnings in the test that caused them
    deadline = time.monotonic() + 5
    while (leaked := set(_sqlite_threads()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"{len(leaked)} SQLite connection(s) left open by this test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def private_redis(port: int, workdir: Path) -> Iterator[Callable[[], None]]:
    """A redis-server of this test's own (the shared one must stay up), and a way to restart it.

    Yields ``restart``, which kills the server (its data goes with it) and starts a new one on
    the same port; the server is stopped at the end.
    """
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop() -> None:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    def restart() -> None:
        # Killed, not shut down: like a crash, nothing is saved (and --save "" keeps no file).
        stop()
        start()

    start()
    try:
        yield restart
    finally:
        stop()
