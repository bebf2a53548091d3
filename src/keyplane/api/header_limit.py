"""Caps on request headers: how many, and how many bytes in all, before the app sees them.

uvicorn's httptools protocol puts no bound on either: llhttp hands each header over only once
it is complete, so one 100 MiB header was buffered whole (34 s of CPU, stalling every other
client) and 10,000 headers were accepted without authentication. An ASGI middleware would come
too late, the memory being spent by then. So the cap lives in the protocol, counting the bytes
of each request's head as they arrive, before the parser sees them: past the cap the
connection is answered 431 and closed, and nothing more is read.

The limits reach the protocol through the ASGI lifespan state (``LIFESPAN_KEY``), which
uvicorn hands to every connection: it works the same with one process or several workers
built by the app factory. :class:`HeaderLimitMiddleware` repeats the check in the ASGI layer
for servers other than ``keyplane serve`` (their own protocol limits then decide the memory).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

#: The lifespan state entry that carries the limits to the protocol.
LIFESPAN_KEY = "keyplane.header_limits"
CODE = "HEADERS_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    #: Most header fields in one request.
    max_count: int = 100
    #: Most bytes in a request's head: request line, every header line, the blank line.
    max_bytes: int = 32 * 1024


def problem_body(limits: HeaderLimits) -> bytes:
    body = {
        "type": "about:blank",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "code": CODE,
        "detail": (
            f"requests are limited to {limits.max_count} header fields "
            f"and {limits.max_bytes} bytes of request line and headers"
        ),
    }
    return json.dumps(body).encode()


def raw_431(limits: HeaderLimits) -> bytes:
    """The whole 431 response as bytes, for a protocol that answers without the app."""
    payload = problem_body(limits)
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/problem+json\r\n"
        "x-content-type-options: nosniff\r\n"
        "cache-control: no-store\r\n"
        f"content-length: {len(payload)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


_END_OF_HEAD = b"\r\n\r\n"


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head of each request counted and capped."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = app_state.get(LIFESPAN_KEY)
        self.header_limits = limits if isinstance(limits, HeaderLimits) else HeaderLimits()
        self._reset_head()

    def _reset_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_lines = 0
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_too_large(data):
            self._refuse()
            return
        super().data_received(data)

    def _head_too_large(self, data: bytes) -> bool:
        # Count only up to the blank line that ends the head (it may straddle two reads);
        # a body arriving in the same read is the body limit's business.
        window = self._tail + data
        end = window.find(_END_OF_HEAD)
        head = data if end < 0 else data[: max(0, end + len(_END_OF_HEAD) - len(self._tail))]
        self._tail = window[-(len(_END_OF_HEAD) - 1) :]
        self._head_bytes += len(head)
        self._head_lines += head.count(b"\n")
        # The request line and the blank line are lines too, not header fields.
        return (
            self._head_bytes > self.header_limits.max_bytes
            or self._head_lines > self.header_limits.max_count + 2
        )

    def _refuse(self) -> None:
        self._in_head = False
        if self.transport.is_closing():
            return
        # A pipelined request still being answered on this connection: writing the 431 now
        # would land inside that response, so the connection is only closed.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(raw_431(self.header_limits))
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reset_head()


class HeaderLimitMiddleware:
    """Pure ASGI: 431 problem+json for a request over the limits that reached the app."""

    def __init__(self, app: ASGIApp, limits: HeaderLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers", ())
            # +4 per field for ": " and CRLF, as on the wire; the target counts too.
            size = sum(len(name) + len(value) + 4 for name, value in headers)
            size += len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            if len(headers) > self.limits.max_count or size > self.limits.max_bytes:
                payload = problem_body(self.limits)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
                return
        await self.app(scope, receive, send)
