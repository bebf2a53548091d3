"""Hostile request headers: too many, too large, or endless.

10,000 headers or a 4 MB header were once accepted without authentication; one 100 MiB
header took 34 s and stalled other clients' ``/healthz`` for 13.8 s, and four at once took
the server from 122 to 618 MiB. ``keyplane serve`` now counts each request's head as it
arrives (``keyplane.api.header_limit``) and answers 431 past ``KEYPLANE_MAX_HEADER_COUNT``
fields or ``KEYPLANE_MAX_HEADER_BYTES`` bytes, before anything is buffered.

The requests are written as raw bytes on a socket: an HTTP client would buffer (or refuse)
them first. Each shape must be answered 431 problem+json, or, for the ones that cannot be
answered because the server stops reading mid-send, end with the connection closed.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyplane.api.header_limit import HeaderLimits
from tests.conftest import Api
from tests.e2e.conftest import Server
from tests.hostile.responsive import assert_stays_responsive

LIMITS = HeaderLimits()  # the defaults: what an operator without a proxy in front gets
MIB = 1024 * 1024
CHUNK = 64 * 1024


def head(*headers: tuple[str, str], target: str = "/healthz", method: str = "GET") -> bytes:
    fields = [f"{name}: {value}" for name, value in headers]
    lines = [f"{method} {target} HTTP/1.1", "Host: keyplane.test", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class Shape:
    name: str
    request: bytes


#: Answered 431 (the whole request fits in the socket buffers, so the answer is read back).
REFUSED: list[Shape] = [
    Shape("10,000 headers", head(*((f"X-H{i}", "v") for i in range(10_000)))),
    Shape("150 small headers (count cap)", head(*((f"X-A{i}", "1") for i in range(150)))),
    Shape("one 4 MB header", head(("X-Big", "a" * 4_000_000))),
    Shape("many medium headers (size cap)", head(*((f"X-M{i}", "m" * 1000) for i in range(50)))),
    Shape("a 40 KB header name", head(("N" * 40_000, "v"))),
    Shape("a 64 KB Cookie", head(("Cookie", "; ".join(f"c{i}={'x' * 60}" for i in range(1000))))),
    Shape(
        "an unauthenticated management call with a huge header",
        head(("X-Anything", "z" * 100_000), target="/v1/keys", method="POST"),
    ),
    Shape("a huge request line", head(target="/healthz?" + "q" * 40_000)),
]

#: Just under the caps: must still be served.
ACCEPTED: list[Shape] = [
    Shape("90 headers", head(*((f"X-A{i}", "1") for i in range(90)))),
    Shape("30 KB of headers", head(*((f"X-M{i}", "m" * 1000) for i in range(30)))),
]


def exchange(port: int, request: bytes, *, timeout: float = 30.0) -> bytes:
    """Send ``request`` (stopping if the server closes) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(CHUNK):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def stream_endless_header(port: int, total: int = 100 * MIB) -> tuple[int, bytes]:
    """Start a request whose one header is ``total`` bytes, streamed in 64 KiB writes; stop
    when the server closes. Returns the bytes sent and whatever answer came back."""
    sent = 0
    chunk = b"a" * CHUNK
    with socket.create_connection(("127.0.0.1", port), timeout=30.0) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: keyplane.test\r\nX-Endless: ")
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return sent, b""
        return sent, _read_all(sock)


def assert_431(answer: bytes) -> None:
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:300]
    head_part, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head_part.lower()
    problem = json.loads(body)
    assert problem["status"] == 431
    assert problem["code"] == "HEADERS_TOO_LARGE"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.e2e
@pytest.mark.parametrize("shape", REFUSED, ids=lambda shape: shape.name)
def test_oversized_heads_are_answered_431(server: Server, shape: Shape) -> None:
    assert_431(exchange(server.port, shape.request))


@pytest.mark.e2e
@pytest.mark.parametrize("shape", ACCEPTED, ids=lambda shape: shape.name)
def test_heads_under_the_caps_are_served(server: Server, shape: Shape) -> None:
    request = shape.request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    answer = exchange(server.port, request)
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:300]


@pytest.mark.e2e
def test_the_cap_applies_to_each_request_of_a_kept_alive_connection(server: Server) -> None:
    # Thirty requests of 2 KB heads on one connection add up to far more than the cap; each
    # alone is fine. Then an oversized one on the same connection is refused.
    small = head(("X-Pad", "p" * 2000))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=30.0) as sock,
        sock.makefile("rb") as reader,
    ):
        for _ in range(30):
            sock.sendall(small)
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
        # 50 KB: small enough to sit in the socket buffers whole, so the answer is read back.
        sock.sendall(REFUSED[3].request)
        assert_431(reader.read())


@pytest.mark.e2e
def test_pipelined_requests_are_answered_whole_and_in_order(server: Server) -> None:
    # Each answer's head is held until its body (api/limited_protocol.HeldHead): two requests
    # in one write still get two whole answers, in order, then the connection goes on.
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=30.0) as sock,
        sock.makefile("rb") as reader,
    ):
        sock.sendall(head() + head(target="/nothing-here") + head())
        for expected in (b"HTTP/1.1 200", b"HTTP/1.1 404", b"HTTP/1.1 200"):
            status = reader.readline()
            assert status.startswith(expected), status
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(reader.read(length))
            assert ("status" in body) if expected.endswith(b"200") else body["status"] == 404


@pytest.mark.e2e
def test_a_100_mib_header_is_cut_off_early_and_memory_stays_flat(server: Server) -> None:
    before = rss_bytes(server.process.pid)
    results: list[tuple[int, bytes]] = []

    def hostile() -> None:
        sent, answer = stream_endless_header(server.port)
        # The server stops reading after the cap: what got through is the cap plus the
        # kernel's socket buffers, nowhere near 100 MiB.
        assert sent < 32 * MIB, sent
        if answer:
            assert_431(answer)
        results.append((sent, answer))

    # Four senders at once: that once took the server from 122 to 618 MiB.
    assert_stays_responsive(server.base_url, hostile, senders=4)
    assert results
    grown = rss_bytes(server.process.pid) - before
    assert grown < 64 * MIB, f"the server grew by {grown / MIB:.1f} MiB"


@pytest.mark.e2e
@pytest.mark.parametrize("shape", [REFUSED[0], REFUSED[2]], ids=lambda shape: shape.name)
def test_the_server_stays_responsive_while_big_heads_arrive(server: Server, shape: Shape) -> None:
    def hostile() -> None:
        assert_431(exchange(server.port, shape.request))

    assert_stays_responsive(server.base_url, hostile)


# -- the ASGI layer, for servers other than keyplane serve -----------------------------------


async def test_the_app_itself_answers_431_problem_json(api: Api) -> None:
    many = {f"x-a{i}": "1" for i in range(150)}
    response = await api.client.get("/healthz", headers=many)
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "HEADERS_TOO_LARGE"
    response = await api.client.get("/v1/keys", headers={"x-big": "b" * 40_000})
    assert response.status_code == 431
    response = await api.client.get("/v1/keys", headers={f"x-a{i}": "1" for i in range(80)})
    assert response.status_code == 200


def test_header_limits_are_settings() -> None:
    from keyplane.settings import Settings

    settings = Settings(max_header_count=50, max_header_bytes=8192)
    assert (settings.max_header_count, settings.max_header_bytes) == (50, 8192)
    with pytest.raises(ValueError, match="max_header_bytes"):
        Settings(max_header_bytes=10)
