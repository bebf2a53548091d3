"""Response headers every Keyplane answer carries.

* ``X-Content-Type-Options: nosniff`` on every response: a browser must not guess a type
  (and run a JSON error echoing a crafted value as HTML or script).
* ``Cache-Control: no-store`` on every response but the docs' static assets. Many answers
  carry a plaintext key or a leased upstream secret (key create and rotate, management-key
  create, vault leases, the compatibility surfaces' creates) and others describe keys; listing
  which ones do would be one more thing to forget when an endpoint is added, and a management
  API gains nothing from caches. A response that sets its own ``Cache-Control`` keeps it.
* ``Keyplane-Version`` on every response, when given: which release answered (also in
  ``/healthz``), for operators and clients comparing instances during a rolling upgrade.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Header = tuple[bytes, bytes]

NOSNIFF: Header = (b"x-content-type-options", b"nosniff")
NO_STORE: Header = (b"cache-control", b"no-store")
VERSION = b"keyplane-version"


class ResponseHeaders:
    """Which of these headers an answer gets: shared by :class:`SecurityHeaders` and the data
    plane (``api/data_plane.py``), which answers before the middleware stack."""

    def __init__(self, cacheable_prefixes: tuple[str, ...] = (), version: str | None = None):
        self.cacheable_prefixes = cacheable_prefixes
        self.version = None if version is None else (VERSION, version.encode("ascii"))

    def no_store(self, path: str) -> bool:
        return not path.startswith(self.cacheable_prefixes)

    def added(self, headers: Iterable[tuple[bytes, bytes]], no_store: bool) -> list[Header]:
        """``headers`` with these added where the answer did not set its own."""
        headers = list(headers)
        names = {name.lower() for name, _value in headers}
        if NOSNIFF[0] not in names:
            headers.append(NOSNIFF)
        if no_store and NO_STORE[0] not in names:
            headers.append(NO_STORE)
        if self.version is not None:
            headers.append(self.version)
        return headers


class SecurityHeaders:
    """Pure ASGI middleware: two header checks per response, nothing else on the hot path."""

    def __init__(self, app: ASGIApp, headers: ResponseHeaders) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = self.headers.no_store(scope.get("path", ""))
        added = self.headers.added

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": added(message.get("headers", ()), no_store)}
            await send(message)

        await self.app(scope, receive, send_with_headers)
