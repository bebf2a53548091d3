"""A real local HTTP receiver for webhook tests: it records every request it gets (headers and
raw body) and answers with the statuses it is told to, in order (then 200)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from keyplane.webhooks import verify


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    #: Statuses to answer next, in order; then 200. ``None`` hangs past the sender's timeout.
    script: list[int | None] = field(default_factory=list)
    hang_seconds: float = 3.0
    #: Paths that always answer 500.
    failing_paths: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *statuses: int | None) -> None:
        with self.lock:
            self.script.extend(statuses)

    def verified(self, secrets: str | Sequence[str], now: Any = None) -> list[Received]:
        """Every request, each checked to verify with ``secrets`` at ``now`` (by default at
        the time it was signed, for deliveries spread over an injected clock's days)."""
        with self.lock:
            got = list(self.received)
        for one in got:
            at = int(one.headers.get("webhook-timestamp", "0")) if now is None else now
            verify(one.body, one.headers, secrets, now=at)
        return got

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            raise AssertionError(f"got {len(self.received)} requests, wanted {count}")


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if len(body) < length:
                # The sender died mid-request (a test kills it mid-delivery): no delivery was
                # made, as a real endpoint would see it, and there is nobody to answer.
                return
            with receiver.lock:
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = receiver.script.pop(0) if receiver.script else 200
                if self.path in receiver.failing_paths:
                    status = 500
            if status is None:
                time.sleep(receiver.hang_seconds)
                status = 200
            with contextlib.suppress(OSError):  # the sender gave up waiting: fine
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # socketserver's default backlog is 5: with dozens of deliveries in flight the kernel
        # dropped connection attempts, the sender's SYN retry cost a second and some ended in
        # ReadError, and those deliveries waited out a 30 s retry.
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
