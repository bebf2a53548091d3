"""Fixtures that run the real ``keyplane serve`` in a subprocess and talk to it over HTTP.

``start_server(env)`` starts one server process with the given ``KEYPLANE_*`` variables (a
``None`` value unsets one), waits until ``/healthz`` answers and returns a :class:`Server`;
every server a test started is stopped (SIGTERM, then SIGKILL) when the test ends. Its stdout
and stderr go to files so tests can read the console and the logs afterwards.

``backend`` gives the environment for a fresh database on SQLite and, when it is reachable, on
PostgreSQL (a schema of its own, dropped afterwards); ``live_server`` is one server per module
and backend for tests that only need a running API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg
import httpx
import pytest

from tests.conftest import (
    PG_URL,
    ROOT_KEY,
    SERVER_SECRET,
    free_port,
    migrated_postgres_schema,
    migrated_sqlite,
)

#: Generous: a cold start imports FastAPI and runs migrations on a possibly loaded machine.
STARTUP_TIMEOUT = 45.0
STOP_TIMEOUT = 20.0
CLI_TIMEOUT = 120.0

Env = Mapping[str, str | None]


def keyplane_command(*args: str) -> list[str]:
    """The installed ``keyplane`` console script, or ``python -m keyplane`` without one."""
    script = Path(sys.executable).with_name("keyplane")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "keyplane", *args]


def process_env(env: Env) -> dict[str, str]:
    """This process's environment without any ``KEYPLANE_*`` variable, then ``env`` applied."""
    result = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    result["PYTHONUNBUFFERED"] = "1"
    for name, value in env.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def run_cli(*args: str, env: Env, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``keyplane <args>`` to completion and return its exit status and output."""
    try:
        return subprocess.run(
            keyplane_command(*args),
            env=process_env(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"keyplane {' '.join(args)} did not finish in {CLI_TIMEOUT} s: {exc.output!r}")


@dataclass
class Server:
    """One running ``keyplane serve`` process."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path
    _files: list[IO[bytes]] = field(default_factory=list, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    @property
    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def client(self, key: str | None = ROOT_KEY) -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0)

    def async_client(
        self, key: str | None = ROOT_KEY, max_connections: int = 20
    ) -> httpx.AsyncClient:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=60.0,
            limits=httpx.Limits(max_connections=max_connections),
        )

    def stop(self) -> int:
        """Stop the server (SIGTERM, SIGKILL after STOP_TIMEOUT); its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        for handle in self._files:
            handle.close()
        self._files.clear()
        return self.process.returncode

    def stop_cleanly(self) -> None:
        """Stop the server and check that it shut down gracefully (lifespan shutdown ran).

        uvicorn re-raises the signal after a graceful shutdown, so SIGTERM's own status counts
        as clean; SIGKILL (the shutdown hung) does not.
        """
        status = self.stop()
        assert status in (0, -signal.SIGTERM), f"exit status {status}\n{self.output}"
        assert "Application shutdown complete" in self.stderr, self.output


class ServerFactory:
    """Starts servers in ``workdir`` and stops all of them in :meth:`stop_all`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[Server] = []
        #: The PostgreSQL schema each server was started on (see ``make_backend``).
        self.schemas: list[tuple[Server, str]] = []
        _FACTORIES.append(self)

    def __call__(self, env: Env, *, attempts: int = 3, args: tuple[str, ...] = ()) -> Server:
        """Start ``keyplane serve <args>`` with ``env`` and wait until it answers."""
        for attempt in range(1, attempts + 1):
            server = self._spawn(env, args)
            if self._wait_until_up(server):
                return server
            server.stop()
            # Another process may have taken the port between free_port() and bind(): retry.
            if "address already in use" not in server.stderr.lower() or attempt == attempts:
                pytest.fail(
                    f"keyplane serve did not come up within {STARTUP_TIMEOUT} s "
                    f"(exit status {server.process.returncode})\n{server.output}"
                )
        raise AssertionError("unreachable")

    def _spawn(self, env: Env, args: tuple[str, ...] = ()) -> Server:
        port = free_port()
        name = f"server-{len(self.servers) + 1}"
        stdout_path = self.workdir / f"{name}.stdout.log"
        stderr_path = self.workdir / f"{name}.stderr.log"
        stdout = stdout_path.open("wb")
        stderr = stderr_path.open("wb")
        full_env = {"KEYPLANE_HOST": "127.0.0.1", **env, "KEYPLANE_PORT": str(port)}
        process = subprocess.Popen(
            keyplane_command("serve", *args),
            env=process_env(full_env),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        server = Server(name, process, port, stdout_path, stderr_path, [stdout, stderr])
        self.servers.append(server)
        schema = env.get("KEYPLANE_DATABASE_SCHEMA")
        if schema:
            self.schemas.append((server, schema))
        return server

    @staticmethod
    def _wait_until_up(server: Server) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if not server.running:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        return True
                time.sleep(0.1)
        return False

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        if self in _FACTORIES:
            _FACTORIES.remove(self)


#: The factories of the running test, so a backend can stop the servers still writing to it.
_FACTORIES: list[ServerFactory] = []


def stop_servers_on(schema: str) -> None:
    """Stop every server started on ``schema``: its schema is emptied and pooled for the next
    test when the backend ends, which can be before the test's servers stop (fixture order,
    or a ``with make_backend`` inside the test), and a live server's background writes then
    raced the emptying (a deadlock) or left rows behind."""
    for factory in _FACTORIES:
        for server, used in factory.schemas:
            if used == schema:
                server.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start ``keyplane serve`` processes; all are stopped at the end of the test."""
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


# -- databases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A fresh database and the ``KEYPLANE_*`` variables that point a server at it."""

    name: str
    url: str
    schema: str | None = None
    sqlite_file: Path | None = None

    @property
    def env(self) -> dict[str, str | None]:
        """Database, server secret and root key: everything a server needs."""
        return {
            **self.database_env,
            "KEYPLANE_SECRET": SERVER_SECRET,
            "KEYPLANE_ROOT_KEY": ROOT_KEY,
        }

    @property
    def database_env(self) -> dict[str, str | None]:
        return {"KEYPLANE_DATABASE_URL": self.url, "KEYPLANE_DATABASE_SCHEMA": self.schema}


async def pg_fetch_column(query: str, *args: object) -> list[object]:
    conn = await asyncpg.connect(PG_URL)
    try:
        return [row[0] for row in await conn.fetch(query, *args)]
    finally:
        await conn.close()


@contextlib.contextmanager
def make_backend(name: str, directory: Path) -> Iterator[Backend]:
    """An empty database at head: the servers' own start finds nothing to migrate."""
    if name == "sqlite":
        path = directory / "keyplane.db"
        migrated_sqlite(directory)
        yield Backend("sqlite", f"sqlite:///{path}", sqlite_file=path)
        return
    with migrated_postgres_schema() as schema:
        try:
            yield Backend("postgres", PG_URL, schema)
        finally:
            stop_servers_on(schema)


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh database on each backend (PostgreSQL skipped when unreachable, unless CI)."""
    with make_backend(request.param, tmp_path) as db:
        yield db


@pytest.fixture(scope="module", params=BACKENDS)
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per module and backend, on a fresh database, authenticated by ROOT_KEY."""
    workdir = tmp_path_factory.mktemp(f"live-{request.param}")
    with make_backend(request.param, workdir) as db:
        factory = ServerFactory(workdir)
        try:
            yield factory(db.env)
        finally:
            factory.stop_all()
