"""Caps on request headers: how many, and how many bytes in all, before the app sees them.

uvicorn's httptools protocol puts no bound on either: llhttp hands each header over only once
it is complete, so one 100 MiB header was buffered whole (34 s of CPU, stalling every other
client) and 10,000 headers were accepted without authentication. An ASGI middleware would come
too late, the memory being spent by then. So the cap lives in the protocol
(:mod:`keyplane.api.limited_protocol`, what ``keyplane serve`` runs), counting the bytes of
each request's head as they arrive, before the parser sees them: past the cap the connection
is answered 431 and closed, and nothing more is read.

The limits reach the protocol through the ASGI lifespan state (``LIFESPAN_KEY``), which
uvicorn hands to every connection: it works the same with one process or several workers
built by the app factory. :class:`HeaderLimitMiddleware` repeats the check in the ASGI layer
for servers other than ``keyplane serve`` (their own protocol limits then decide the memory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane.api.body_limit import answer_and_close

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


def over_limits(scope: Scope, limits: HeaderLimits) -> bool:
    """Whether a request's head, as it reached the app, is over ``limits``."""
    headers = scope.get("headers", ())
    if len(headers) > limits.max_count:
        return True
    # +4 per field for ": " and CRLF, as on the wire; the target counts too.
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    size += len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return size > limits.max_bytes


class HeaderLimitMiddleware:
    """Pure ASGI: 431 problem+json for a request over the limits that reached the app."""

    def __init__(self, app: ASGIApp, limits: HeaderLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and over_limits(scope, self.limits):
            await answer_and_close(send, 431, problem_body(self.limits))
            return
        await self.app(scope, receive, send)
