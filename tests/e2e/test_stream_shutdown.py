"""A server with a live usage stream open still stops cleanly (streams never end on their own)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import ServerFactory, make_backend


def test_an_open_stream_does_not_hold_the_shutdown(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    with make_backend("sqlite", tmp_path) as backend:
        server = start_server(backend.env)
    opened = threading.Event()

    def subscribe() -> None:
        try:
            with (
                server.client() as http,
                http.stream("GET", "/v1/usage/stream", timeout=None) as response,
            ):
                for _line in response.iter_lines():
                    opened.set()
        except httpx.HTTPError:
            pass  # the server went away: expected

    reader = threading.Thread(target=subscribe, daemon=True)
    reader.start()
    assert opened.wait(30), server.output
    started = time.monotonic()
    server.stop_cleanly()  # SIGTERM; SIGKILL (a failure here) after 20 s
    assert time.monotonic() - started < 20
    reader.join(30)
