"""``keyplane serve``'s protocol writes a response's head and body in one call
(``api/limited_protocol.HeldHead``), and nothing is lost or reordered by holding the head."""

from __future__ import annotations

import asyncio

from keyplane.api.limited_protocol import HeldHead


class Recording(asyncio.Transport):
    """A transport that keeps what it is asked to write, one entry per call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_a_head_and_its_body_are_one_write() -> None:
    transport = Recording()
    held = HeldHead(transport, asyncio.get_running_loop())
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert transport.calls == []
    held.write(b"{}")
    assert transport.calls == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    held.write(b"more")  # a stream's next chunks go out as they come
    assert transport.calls[1:] == [b"more"]
    await asyncio.sleep(0)
    assert len(transport.calls) == 2  # nothing written twice


async def test_a_head_without_a_body_this_turn_is_written_when_the_turn_ends() -> None:
    transport = Recording()
    held = HeldHead(transport, asyncio.get_running_loop())
    held.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert transport.calls == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    held.write(b"5\r\nhello\r\n")
    assert transport.calls[1:] == [b"5\r\nhello\r\n"]


async def test_closing_writes_a_held_head_first() -> None:
    transport = Recording()
    held = HeldHead(transport, asyncio.get_running_loop())
    held.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    held.close()
    assert transport.calls == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    assert held.is_closing()
    await asyncio.sleep(0)
    assert len(transport.calls) == 1
