"""The lean data plane: verify, forward auth and healthz without FastAPI's routing.

A gateway calls verify on every request it serves, and an orchestrator probes healthz every
few seconds; FastAPI's routing, dependency injection and response machinery cost several times
what these two do (see docs/performance.md). This pure ASGI middleware, innermost of the
middleware stack (inside the request observer and the header and body limits), answers them
directly. It stays exactly as strict as the routes, because it *is* the routes:

* verify calls the route's own endpoint (``api/routes/verify.py``) with the body validated by
  the endpoint's own body model, the principal authenticated by ``api.deps.get_principal``
  and held to the scope the route's own dependency names, before the body is read; and
  credits rendered exactly as :class:`~keyplane.api.exact.ExactJsonRoute` renders them. A
  field added to the verify request or to the endpoint's mapping works here with no second
  edit; a parameter added to the endpoint turns the lean path off for it (``lean_verify``
  checks its signature) rather than call it wrongly.
* Forward auth (``/v1/auth``, every method, and ``/v1/auth/<any path>``) calls the route's own
  endpoint with the request and the gateway's services, as the route would; it reads no body.
* Usage reports (``POST /v1/usage``) call the route's own endpoint the same way as verify:
  the principal held to the route's scope before the body is read, the body validated by the
  route's body model, the ``Idempotency-Key`` header by the route's own annotation; the
  returned model is rendered as FastAPI renders the route's ``response_model``, with the
  status the endpoint set (200 for a repeat) or the route's (201).
* Anything but the happy path goes to FastAPI, with the body replayed: a body that is not JSON
  or fails validation, a content type other than JSON, another method. So every error
  document, 422 included, is the one the routes give. Errors raised after the body was parsed
  (storage down, limiter unavailable) are rendered by ``api.problems.error_response``, the
  routes' own handler.
* ``scope["route"]`` is the FastAPI route object, so the metrics and the access log name the
  route template as for any other request.
* The OpenAPI document still comes from the routes, which stay registered and serve every
  request this middleware passes on.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.params import Depends, Header
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane import errors
from keyplane.api import problems
from keyplane.api.deps import get_gateway, get_principal, get_usage, get_verifier
from keyplane.api.exact import ExactJsonRequest, JsonNumber, exactly
from keyplane.domain.tenancy import Principal
from keyplane.services.authz import require_scope

Endpoint = Callable[..., Awaitable[Any]]
_JSON = b"application/json"


class LeanRoute:
    """What the lean path needs of any route it answers, read from the route itself: its
    endpoint, the model its body is validated by, the scope its principal must hold."""

    def __init__(self, route: APIRoute, body_model: type[BaseModel], scope: str) -> None:
        self.route = route
        self.endpoint: Endpoint = route.endpoint
        self.body_model = body_model
        self.scope = scope


class LeanVerify(LeanRoute):
    """The verify route's parts."""

    def __init__(
        self, route: APIRoute, body_model: type[BaseModel], scope: str, wants_request: bool
    ) -> None:
        super().__init__(route, body_model, scope)
        #: The endpoint also takes the request itself (``request: Request``).
        self.wants_request = wants_request


def lean_verify(route: APIRoute) -> LeanVerify | None:
    """The lean form of the verify route; ``None`` when its endpoint is not the expected
    ``(body, principal, verifier)``, optionally with ``request: Request`` (then every verify
    goes through FastAPI, which resolves whatever else it takes)."""
    endpoint = route.endpoint
    names = list(inspect.signature(endpoint).parameters)
    hints = typing.get_type_hints(endpoint, include_extras=True)
    wants_request = "request" in names and hints["request"] is Request
    if [n for n in names if n != "request" or not wants_request] != [
        "body",
        "principal",
        "verifier",
    ]:
        return None
    body_model = hints["body"]
    scope = _required_scope(hints["principal"])
    if not _is_model(body_model) or not scope:
        return None
    return LeanVerify(route, body_model, scope, wants_request)


class LeanUsage(LeanRoute):
    """The usage-report route's parts."""

    def __init__(
        self,
        route: APIRoute,
        body_model: type[BaseModel],
        scope: str,
        idempotency_key: TypeAdapter[Any],
        answer_model: type[BaseModel],
    ) -> None:
        super().__init__(route, body_model, scope)
        #: The ``Idempotency-Key`` header's own annotation, to validate it as the route does.
        self.idempotency_key = idempotency_key
        self.answer_model = answer_model
        self.status = route.status_code or 200


def lean_usage(route: APIRoute) -> LeanUsage | None:
    """The lean form of ``POST /v1/usage``; ``None`` (FastAPI answers every report) unless
    its endpoint is exactly ``(body, principal, usage, response, idempotency_key)`` with the
    header optional, and it has a response model."""
    endpoint = route.endpoint
    parameters = inspect.signature(endpoint).parameters
    if list(parameters) != ["body", "principal", "usage", "response", "idempotency_key"]:
        return None
    hints = typing.get_type_hints(endpoint, include_extras=True)
    body_model = hints["body"]
    scope = _required_scope(hints["principal"])
    header = hints["idempotency_key"]
    header_markers = [m for m in getattr(header, "__metadata__", ()) if isinstance(m, Header)]
    answer_model = route.response_model
    if (
        not _is_model(body_model)
        or not scope
        or hints["response"] is not Response
        or len(header_markers) != 1
        or header_markers[0].alias not in (None, "idempotency-key")
        or parameters["idempotency_key"].default is not None
        or not _is_model(answer_model)
    ):
        return None
    return LeanUsage(route, body_model, scope, TypeAdapter(header), answer_model)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _required_scope(principal: Any) -> str | None:
    """The scope a principal parameter's dependency requires (``deps.scoped``)."""
    return next(
        (
            getattr(extra.dependency, "required_scope", None)
            for extra in getattr(principal, "__metadata__", ())
            if isinstance(extra, Depends)
        ),
        None,
    )


def lean_forward_auth(routes: list[APIRoute]) -> dict[str, APIRoute]:
    """The forward-auth routes (``/v1/auth``, ``/v1/auth/{path}``) by method, each endpoint
    being the expected ``(request, gateway)``; the others are left to FastAPI."""
    by_method: dict[str, APIRoute] = {}
    for route in routes:
        if list(inspect.signature(route.endpoint).parameters) == ["request", "gateway"]:
            for method in route.methods or ():
                by_method.setdefault(method, route)
    return by_method


class DataPlane:
    """Pure ASGI middleware: verify, forward auth and healthz without FastAPI's router."""

    def __init__(
        self,
        app: ASGIApp,
        verify: LeanVerify | None,
        health: APIRoute,
        version: str,
        auth: dict[str, APIRoute] | None = None,
        auth_any_path: dict[str, APIRoute] | None = None,
        usage: LeanUsage | None = None,
    ) -> None:
        self.app = app
        self.verify = verify
        self.usage = usage
        self.health = health
        # What FastAPI renders for the healthz route's dict: compact JSON.
        self.health_body = b'{"status":"ok","version":"%s"}' % version.encode("ascii")
        self.auth = auth or {}
        self.auth_any_path = auth_any_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            method = scope["method"]
            if path == "/v1/verify" and method == "POST" and self.verify is not None:
                await self._verify(self.verify, scope, receive, send)
                return
            if path == "/v1/usage" and method == "POST" and self.usage is not None:
                await self._usage(self.usage, scope, receive, send)
                return
            if path == "/healthz" and method == "GET" and not scope["query_string"]:
                scope["route"] = self.health
                await _answer(send, 200, self.health_body)
                return
            if path == "/v1/auth" and method in self.auth:
                await self._forward_auth(self.auth[method], scope, receive, send)
                return
            if path.startswith("/v1/auth/") and method in self.auth_any_path:
                scope["path_params"] = {"path": path[len("/v1/auth/") :]}
                await self._forward_auth(self.auth_any_path[method], scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _forward_auth(
        self, route: APIRoute, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # The route's endpoint answers every case itself (its refusals are its own documents);
        # only an error from below (storage, limiter) is left to the problem handler.
        scope["route"] = route
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request, await get_gateway(request))
        except errors.KeyplaneError as exc:
            response = problems.error_response(request, exc)
        await response(scope, receive, send)

    async def _verify(self, lean: LeanVerify, scope: Scope, receive: Receive, send: Send) -> None:
        read = await self._read(lean, scope, receive, send)
        if read is None:
            return
        request, principal, body, parsed = read
        if parsed is None:
            # Not the happy path: the route answers, with its own error document.
            await self.app(scope, _replay(body), send)
            return
        arguments: dict[str, Any] = {"body": parsed, "principal": principal}
        arguments["verifier"] = await get_verifier(request)
        if lean.wants_request:
            arguments["request"] = request
        await _respond(request, lean.endpoint(**arguments), scope, receive, send)

    async def _usage(self, lean: LeanUsage, scope: Scope, receive: Receive, send: Send) -> None:
        read = await self._read(lean, scope, receive, send)
        if read is None:
            return
        request, principal, body, parsed = read
        idempotency_key = _idempotency_key(lean, request)
        if parsed is None or idempotency_key is _INVALID:
            await self.app(scope, _replay(body), send)
            return
        # As FastAPI's sub-response: no status until the endpoint sets one.
        status = Response()
        status.status_code = None  # type: ignore[assignment]
        usage = await get_usage(request)

        async def answer() -> Response:
            recorded = await lean.endpoint(
                body=parsed,
                principal=principal,
                usage=usage,
                response=status,
                idempotency_key=idempotency_key,
            )
            return JSONResponse(
                lean.answer_model.model_validate(recorded).model_dump(mode="json"),
                status_code=status.status_code or lean.status,
            )

        await _respond(request, answer(), scope, receive, send)

    async def _read(
        self, lean: LeanRoute, scope: Scope, receive: Receive, send: Send
    ) -> tuple[Request, Principal, bytes, BaseModel | None] | None:
        """Who asks and whether they may, before a byte of the body is read; then the body
        and its validation by the route's body model (``None``: not the happy path). ``None``
        when this answered already (refused) or the client went away."""
        scope["route"] = lean.route
        request = ExactJsonRequest(scope, receive)
        try:
            principal = await get_principal(request)
            require_scope(principal, lean.scope)
        except errors.KeyplaneError as exc:
            await problems.error_response(request, exc)(scope, receive, send)
            return None
        body = await _read_body(receive)
        if body is None:
            return None
        return request, principal, body, _parse(lean.body_model, scope, body)


async def _respond(
    request: Request, answer: Awaitable[Response], scope: Scope, receive: Receive, send: Send
) -> None:
    """Send ``answer`` with its credits exact, as the route's ExactJsonRoute does, or the
    routes' own problem document for an error raised below (storage, limiter)."""
    try:
        response = await exactly(answer)
    except errors.KeyplaneError as exc:
        response = problems.error_response(request, exc)
    await response(scope, receive, send)


_INVALID = object()


def _idempotency_key(lean: LeanUsage, request: Request) -> Any:
    """The ``Idempotency-Key`` header as the route's annotation validates it (``None`` when
    absent); ``_INVALID`` when it fails, so the route answers with its own 422."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    try:
        return lean.idempotency_key.validate_python(value)
    except ValidationError:
        return _INVALID


def _parse(model: type[BaseModel], scope: Scope, body: bytes) -> BaseModel | None:
    """The validated body, as the route would read it; ``None`` for anything unusual."""
    for name, value in scope["headers"]:
        if name == b"content-type" and value != _JSON:
            return None  # FastAPI decides what other content types mean
    try:
        # As ExactJsonRequest reads it: numbers keep their text, for exact credits.
        return model.model_validate(json.loads(body, parse_float=JsonNumber))
    except Exception:  # whatever it is, the route reproduces it and answers it
        return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    return receive


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", _JSON)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
