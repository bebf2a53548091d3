"""Refuse request bodies over a size limit before any parsing happens."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: (path prefix, the ASGI response to send for this message): a surface with its own format.
TooLargeRenderer = tuple[str, Callable[[str], ASGIApp]]


class BodySizeLimit:
    """Pure ASGI middleware: buffers at most ``max_bytes`` of body, answers 413 past that.

    Checking only Content-Length would let a chunked upload through, so the bytes actually
    received are counted too.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, renderers: Sequence[TooLargeRenderer] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.renderers = tuple(renderers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, send)
            return
        body, read = await read_body(receive, self.max_bytes)
        if body is None:
            if read[-1]["type"] == "http.request":
                await self._too_large(scope, send)
            else:
                await self.app(scope, replay(read[-1:]), send)
            return
        await self.app(
            scope,
            replay([{"type": "http.request", "body": body, "more_body": False}], receive),
            send,
        )

    async def _too_large(self, scope: Scope, send: Send) -> None:
        detail = f"request bodies are limited to {self.max_bytes} bytes"
        path = scope.get("path", "")
        for prefix, render in self.renderers:
            if path.startswith(prefix):
                await render(detail)(scope, replay([]), send)
                return
        await _too_large(send, detail)


async def read_body(receive: Receive, max_bytes: int) -> tuple[bytes | None, list[Message]]:
    """A request's whole body, ``(body, [])``, when it is at most ``max_bytes``; else
    ``(None, the messages read)``, the last being the one past the limit or the one that is not
    the body (the client went away)."""
    read: list[Message] = []
    size = 0
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return None, read
        size += len(message.get("body", b""))
        if size > max_bytes:
            return None, read
        if not message.get("more_body", False):
            break
    if len(read) == 1:
        return read[0].get("body", b""), []
    return b"".join(m.get("body", b"") for m in read), []


def content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A receive that gives ``messages`` first, then what ``then`` gives (or a disconnect)."""

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _too_large(send: Send, detail: str) -> None:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": "Content Too Large",
        "status": 413,
        "code": "PAYLOAD_TOO_LARGE",
        "detail": detail,
    }
    await answer_and_close(send, 413, json.dumps(body).encode())


async def answer_and_close(send: Send, status: int, problem: bytes) -> None:
    """Send a problem+json refusal and ask for the connection to be closed (what is left of
    the request is not read)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(problem)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": problem})
