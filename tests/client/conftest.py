"""Fixtures for the SDK and CLI tests.

``sdk`` is an :class:`~keyplane.client.AsyncClient` over the in-process app (``api``) on each
backend; ``live_server`` (one real ``keyplane serve`` per module and backend) serves the sync
client and the CLI, ``vault_server`` the same with a vault master key; ``scripted`` is a small
real HTTP server that answers from a script, to see what the client sends on retries and how
it reads errors.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from keyplane.client import AsyncClient
from tests.conftest import ROOT_KEY, VAULT_KEY, Api
from tests.e2e.conftest import (
    BACKENDS,
    Server,
    ServerFactory,
    live_server,  # noqa: F401 - a fixture, used by the modules here
    make_backend,
)


@pytest.fixture
async def sdk(api: Api) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        "http://keyplane.test",
        ROOT_KEY,
        transport=httpx.ASGITransport(app=api.app),  # type: ignore[arg-type]
        max_retries=0,
    ) as client:
        yield client


@pytest.fixture(scope="module", params=BACKENDS)
def vault_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Like ``live_server``, with a vault master key: one server per module and backend."""
    workdir = tmp_path_factory.mktemp(f"vault-{request.param}")
    with make_backend(request.param, workdir) as db:
        factory = ServerFactory(workdir)
        try:
            yield factory({**db.env, "KEYPLANE_VAULT_KEY": VAULT_KEY})
        finally:
            factory.stop_all()


@dataclass
class Reply:
    status: int
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Drop the connection without answering (the client sees a transport error).
    hang_up: bool = False


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 answering each request with the next scripted reply."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.received: list[Received] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:  # keep the test output clean
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                script.received.append(Received(self.command, self.path, headers, body))
                reply = script.replies.pop(0) if script.replies else Reply(500, {"code": "NONE"})
                if reply.hang_up:
                    self.close_connection = True
                    self.connection.close()
                    return
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                if isinstance(reply.body, str):
                    payload = reply.body.encode()
                self.send_response(reply.status)
                media = "application/problem+json" if reply.status >= 400 else "application/json"
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(5)
