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

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")
VERSION = b"keyplane-version"


class SecurityHeaders:
    """Pure ASGI middleware: two header checks per response, nothing else on the hot path."""

    def __init__(
        self, app: ASGIApp, cacheable_prefixes: tuple[str, ...] = (), version: str | None = None
    ) -> None:
        self.app = app
        self.cacheable_prefixes = cacheable_prefixes
        self.version = None if version is None else (VERSION, version.encode("ascii"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        no_store = not path.startswith(self.cacheable_prefixes)
        version = self.version

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _value in headers}
                if NOSNIFF[0] not in names:
                    headers.append(NOSNIFF)
                if no_store and NO_STORE[0] not in names:
                    headers.append(NO_STORE)
                if version is not None:
                    headers.append(version)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
