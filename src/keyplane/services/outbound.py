"""Outbound HTTP for webhooks, guarded against server-side request forgery.

Two checks, one at each end of an endpoint's life:

- ``OutboundGuard.check_url`` when an endpoint is registered: https only (unless
  ``KEYPLANE_WEBHOOK_ALLOW_HTTP``), a bounded length, no credentials in the URL, and no
  literal address that ``domain/outbound.py`` refuses, in any of its spellings.
- ``OutboundGuard.post`` at every delivery: the host is resolved here, every address it
  resolves to is judged, and the connection is made to the judged address itself. The name
  is resolved once per connection and never again by anyone else, so a DNS answer that
  changes between the check and the connect (DNS rebinding) cannot move the request to
  another address. The ``Host`` header and TLS (SNI and certificate verification) keep the
  name, so virtual hosting and certificates work as usual.

Delivery uses httpcore directly, under a network backend that does the resolution and the
check: httpcore follows no redirects, reads no proxy settings from the environment, and asks
that backend for every new connection, including those its pool opens later. The response is
read up to ``KEYPLANE_WEBHOOK_MAX_RESPONSE_BYTES`` and the whole exchange, resolution
included, is bounded by one timeout.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpcore
import httpx

from keyplane.domain.network import IpAddress, IpNetwork, parse_ip
from keyplane.domain.outbound import host_address, legacy_ipv4, verdict
from keyplane.errors import ValidationError

if TYPE_CHECKING:
    from keyplane.settings import Settings

#: Resolves a host name to its addresses: ``await resolver(host, port)``.
Resolver = Callable[[str, int], Awaitable[Sequence[IpAddress]]]

MAX_URL_LENGTH = 2048
USER_AGENT = "Keyplane-Webhooks/1"
_MAX_ERROR_LENGTH = 300
#: Headers the guard writes itself; a caller's copies are dropped (httpcore adds the length).
_OWN_HEADERS = frozenset({"host", "user-agent", "content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one POST came to.

    ``status`` is the HTTP status, or ``None`` when no response came (refused address,
    connection failure, timeout); ``error`` says what went wrong, ``None`` on a 2xx.
    ``body`` is the start of the response, at most the configured cap.
    """

    status: int | None
    latency_ms: int
    error: str | None
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def system_resolver(host: str, port: int) -> Sequence[IpAddress]:
    """The addresses ``getaddrinfo`` gives for ``host``, deduplicated, in its order."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
    found: list[IpAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = parse_ip(str(sockaddr[0]))
        if address is None:
            # A scoped (zone id) or otherwise odd answer: judged as what it is not, refused.
            raise httpcore.ConnectError(f"{host} resolved to an unusable address")
        if address not in found:
            found.append(address)
    return found


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="INVALID_WEBHOOK_URL")


class _AddressRefused(httpcore.ConnectError):
    """A delivery's host resolved to an address the guard refuses (internal signal)."""


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the guard allows."""

    def __init__(self, guard: OutboundGuard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self._guard.resolve_checked(host, port)
        # The checked address, not the name: nothing resolves the name again after the check.
        return await self._inner.connect_tcp(
            str(address), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise _AddressRefused("webhooks are never sent over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    target: bytes


class OutboundGuard:
    """Checks webhook URLs and posts to them without reaching where it must not.

    Args:
        allow_networks: networks deliveries may reach even though they are private,
            loopback and so on (``KEYPLANE_WEBHOOK_ALLOW_NETWORKS``).
        allow_http: accept ``http://`` URLs as well as ``https://``.
        timeout_seconds: default bound on one delivery, resolution to last byte read.
        max_response_bytes: most response bytes read; the rest is dropped unread.
        resolver: how names are resolved (``getaddrinfo`` by default; tests inject one).
        ssl_context: TLS settings (the system's trust store by default).
    """

    def __init__(
        self,
        *,
        allow_networks: Sequence[IpNetwork] = (),
        allow_http: bool = False,
        timeout_seconds: float = 10.0,
        max_response_bytes: int = 4096,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_networks = tuple(allow_networks)
        self.allow_http = allow_http
        self.timeout_seconds = timeout_seconds
        self.max_response_bytes = max_response_bytes
        self._resolver = resolver or system_resolver
        self._ssl_context = ssl_context
        self._pool: httpcore.AsyncConnectionPool | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, resolver: Resolver | None = None
    ) -> OutboundGuard:
        return cls(
            allow_networks=settings.webhook_allow_network_list,
            allow_http=settings.webhook_allow_http,
            timeout_seconds=settings.webhook_timeout_seconds,
            max_response_bytes=settings.webhook_max_response_bytes,
            resolver=resolver,
        )

    def check_url(self, url: str) -> str:
        """Static checks for a webhook URL; the URL back, normalised, when it passes.

        Raises:
            ValidationError: too long, not http(s) (or http when not allowed), credentials,
                a fragment, no host, or a literal address that is refused.
        """
        self._parse(url)
        return str(httpx.URL(url))

    def _parse(self, url: str) -> _Target:
        if len(url) > MAX_URL_LENGTH:
            raise _invalid(f"a webhook URL is at most {MAX_URL_LENGTH} characters")
        if any(ord(char) <= 32 or ord(char) == 127 for char in url):
            raise _invalid("a webhook URL has no spaces or control characters")
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            raise _invalid("not a valid URL") from None
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parsed.scheme not in schemes:
            raise _invalid(
                "a webhook URL must use https or http"
                if self.allow_http
                else "a webhook URL must use https (KEYPLANE_WEBHOOK_ALLOW_HTTP permits http)"
            )
        if parsed.userinfo:
            raise _invalid("a webhook URL carries no user name or password")
        if parsed.fragment:
            raise _invalid("a webhook URL has no #fragment")
        # The ASCII (IDNA) form: what DNS, the Host header and SNI see.
        host = parsed.raw_host.decode("ascii")
        if not host:
            raise _invalid("a webhook URL needs a host")
        if "%" in host:
            raise _invalid("a webhook URL's host has no IPv6 zone id")
        literal = host_address(host)
        if literal is not None:
            if ":" not in host and str(literal) != host:
                # 2130706433, 0177.0.0.1, 127.1: resolvers read them, people misread them.
                raise _invalid(f"write the address {host} as {literal}")
            refused = verdict(literal, self.allow_networks)
            if refused is not None:
                raise _invalid(f"webhooks cannot be sent there: {refused}")
        elif legacy_ipv4(host) is None and host.rstrip(".").rsplit(".", 1)[-1].isdigit():
            raise _invalid(f"{host} is neither a host name nor an IP address")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return _Target(parsed.scheme, host, port, parsed.raw_path)

    async def resolve_checked(self, host: str, port: int) -> IpAddress:
        """The address to connect to for ``host``: resolved here, every answer judged.

        Raises:
            httpcore.ConnectError: no address, or one of them refused (a name that answers
                with a public and a private address is refused whole: it is a rebinding
                setup, or a misconfiguration the operator should hear about).
        """
        literal = host_address(host)
        addresses: Sequence[IpAddress] = (
            [literal] if literal is not None else await self._resolver(host, port)
        )
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            refused = verdict(address, self.allow_networks)
            if refused is not None:
                shown = refused if literal is not None else f"{host} resolves to {refused}"
                raise _AddressRefused(shown)
        return addresses[0]

    def _connection_pool(self) -> httpcore.AsyncConnectionPool:
        if self._pool is None:
            self._pool = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context,
                max_connections=100,
                keepalive_expiry=30.0,
                retries=0,
                network_backend=_GuardedBackend(self),
            )
        return self._pool

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float | None = None,
    ) -> DeliveryResult:
        """POST ``body`` to ``url``; never raises for what the receiver or network does.

        Refused URLs and addresses, connection failures, timeouts and non-2xx answers all
        come back as a ``DeliveryResult`` with ``error`` set. Redirects are not followed.
        """
        limit = self.timeout_seconds if timeout is None else timeout
        started = time.monotonic()

        def result(status: int | None, error: str | None, body: bytes = b"") -> DeliveryResult:
            elapsed = int((time.monotonic() - started) * 1000)
            shown = None if error is None else error[:_MAX_ERROR_LENGTH]
            return DeliveryResult(status, elapsed, shown, body)

        try:
            target = self._parse(url)
        except ValidationError as exc:
            return result(None, f"refused: {exc.message}")
        default_port = 443 if target.scheme == "https" else 80
        host_header = f"[{target.host}]" if ":" in target.host else target.host
        if target.port != default_port:
            host_header += f":{target.port}"
        request_headers = [
            (b"Host", host_header.encode("ascii")),
            (b"User-Agent", USER_AGENT.encode()),
        ]
        request_headers += [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
            if name.lower() not in _OWN_HEADERS
        ]
        request_url = httpcore.URL(
            scheme=target.scheme.encode(),
            host=target.host.encode("ascii"),
            port=target.port,
            target=target.target,
        )
        per_step = {"connect": limit, "read": limit, "write": limit, "pool": limit}
        try:
            async with asyncio.timeout(limit):
                async with self._connection_pool().stream(
                    "POST",
                    request_url,
                    headers=request_headers,
                    content=body,
                    extensions={"timeout": per_step},
                ) as response:
                    received = await self._read_capped(response)
                    status = response.status
        except _AddressRefused as exc:
            return result(None, f"refused: {exc}")
        except TimeoutError:
            return result(None, f"timed out after {limit:g} s")
        except httpcore.TimeoutException:
            return result(None, f"timed out after {limit:g} s")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            return result(None, f"{type(exc).__name__}: {exc}".rstrip(": "))
        except ssl.SSLError as exc:
            return result(None, f"TLS: {exc.reason or exc}")
        if 200 <= status < 300:
            return result(status, None, received)
        if 300 <= status < 400:
            return result(status, f"redirect ({status}) not followed", received)
        return result(status, f"HTTP {status}", received)

    async def _read_capped(self, response: httpcore.Response) -> bytes:
        received = bytearray()
        if self.max_response_bytes == 0:
            return b""
        async for chunk in response.aiter_stream():
            received += chunk[: self.max_response_bytes - len(received)]
            if len(received) >= self.max_response_bytes:
                # Leaving the block closes the connection with the rest unread: a receiver
                # cannot make Keyplane download a large answer.
                break
        return bytes(received)

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
