"""An ASGI middleware that lets only requests with a usable API key through.

Works with any ASGI framework (Starlette, FastAPI, Litestar, Django's ASGI handler). The
decision of an allowed request is left in ``scope["state"]["keyplane"]`` (``request.state
.keyplane`` in Starlette and FastAPI); a refused one is answered with problem+json here and
never reaches the application.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.datastructures import Headers

from keyplane.integrations import http
from keyplane.integrations.decision import Decision
from keyplane.integrations.guard import KeyGuard

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: WebSocket close code for "policy violation" (RFC 6455 section 7.4.1).
_WS_POLICY_VIOLATION = 1008


class KeyAuthMiddleware:
    """Require a usable API key on every HTTP and WebSocket request, except ``exempt`` paths.

    Args:
        app: the ASGI application to protect.
        guard: reads the key and asks the verifier.
        scopes: scopes every request's key must hold.
        model: the model every request is checked against, if the service has one.
        exempt: paths served without a key (exact matches, such as ``/healthz``).

    Example:
        >>> app.add_middleware(KeyAuthMiddleware, guard=KeyGuard(verifier), exempt=["/healthz"])
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: KeyGuard,
        scopes: Sequence[str] = (),
        model: str | None = None,
        exempt: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.guard = guard
        self.scopes = tuple(scopes)
        self.model = model
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = client[0] if client else None
        decision = await self.guard.check(
            Headers(scope=scope), peer, scopes=self.scopes, model=self.model
        )
        if decision.valid:
            scope.setdefault("state", {})["keyplane"] = decision
            await self.app(scope, receive, self._with_ratelimit(decision, send))
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
        else:
            await self._refuse(decision, send)

    def _with_ratelimit(self, decision: Decision, send: Send) -> Send:
        """``send`` that adds the key's ``RateLimit-*`` headers to the app's response."""
        extra = [
            (name.lower().encode(), value.encode())
            for name, value in http.ratelimit_headers(decision, self.guard.now()).items()
        ]
        if not extra:
            return send

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return sending

    async def _refuse(self, decision: Decision, send: Send) -> None:
        body = json.dumps(http.problem_body(decision)).encode()
        headers = http.response_headers(decision, self.guard.now())
        # response_headers gives ASCII only (free text is percent-encoded there).
        raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        raw.append((b"content-type", b"application/problem+json"))
        raw.append((b"content-length", str(len(body)).encode()))
        status = http.status_for(decision.code)
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
