"""uvicorn's httptools protocol with each request's head counted and capped as it arrives.

See :mod:`keyplane.api.header_limit` for why the cap must sit here rather than in the app.
Kept apart from it so the application itself does not import a particular server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from keyplane.api.header_limit import LIFESPAN_KEY, HeaderLimits, raw_431

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
        self._refused = False
        self._reset_head()

    def _reset_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_lines = 0
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
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
        # Nothing more of this connection is parsed, even if a read is already queued.
        self._refused = True
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
        cycle = self.cycle
        # The response cycle just made (not yet running) writes through a HeldHead.
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = HeldHead(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reset_head()


class HeldHead:
    """What a response cycle writes to: its first write (the response's head) is held until
    the next (the body), or the end of this turn of the event loop, so a response sent whole
    (every answer but a stream) is one write, one system call, instead of two."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = b""  # b"": nothing written yet; None: no more holding

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._transport.write(data)
        elif held:
            self._held = None
            self._transport.write(held + data)
        else:
            self._held = data
            self._loop.call_soon(self._release)

    def _release(self) -> None:
        held = self._held
        self._held = None
        if held:
            self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()
