"""The lean data plane: verify, forward auth and healthz without FastAPI's routing.

A gateway calls verify on every request it serves, and an orchestrator probes healthz every
few seconds; FastAPI's routing, dependency injection and response machinery cost several times
what these two do (see docs/performance.md). This pure ASGI middleware, innermost of the
middleware stack (inside the request observer and the header and body limits), answers them
directly. It stays exactly as strict as the routes, because it is made of their own parts:

* verify does what the route's endpoint does (``api/routes/verify.py``), from the same parts:
  the body validated by the route's body model (or, for a body of one key and nothing else,
  read by ``routes.verify.plain_request``, held equal to it), turned into the verifier's
  request by ``routes.verify.service_request``, the principal authenticated by
  ``api.deps.principal_of`` and held to the scope the route's own dependency names before the
  body is read, and the verdict written by ``verdict_json``, exact credits included. A field
  added to the verify request works here with no second edit; a parameter added to the
  endpoint turns the lean path off (``lean_verify`` checks its signature) rather than answer
  without it; ``tests/api/test_data_plane.py`` holds the answers of both paths equal on
  random requests.
* Forward auth (``/v1/auth``, every method, and ``/v1/auth/<any path>``) calls the route's own
  endpoint with the request and the gateway's services, as the route would; it reads no body.
* Usage reports (``POST /v1/usage``) call the route's own endpoint, with the principal held
  to the route's scope before the body is read, the body validated by the route's body
  model, the ``Idempotency-Key`` header by the route's own annotation; the
  returned model is rendered as FastAPI renders the route's ``response_model`` (the same
  bytes, from pydantic's own JSON serialiser), with the status the endpoint set (200 for a
  repeat) or the route's (201).
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
import time
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.params import Depends, Header
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane import errors
from keyplane.api import observe, problems
from keyplane.api.body_limit import read_body, replay
from keyplane.api.deps import get_gateway, get_usage, principal_of
from keyplane.api.exact import ExactJsonRequest, exactly, loads_exact
from keyplane.api.header_limit import HeaderLimits
from keyplane.api.observe import Access, Observer
from keyplane.api.request_head import JSON, RequestHead
from keyplane.api.routes.verify import plain_request, service_request
from keyplane.api.schemas import VerifyRequest
from keyplane.api.security_headers import ResponseHeaders
from keyplane.api.verdict_json import verdict_json
from keyplane.domain.tenancy import Principal
from keyplane.services import verify as service
from keyplane.services.authz import require_scope
from keyplane.services.runtime import Services

Endpoint = Callable[..., Awaitable[Any]]


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

    async def answer(
        self, scope: Scope, head: RequestHead, body: bytes, receive: Receive, exchange: _Exchange
    ) -> bool:
        """Answer a verify (``DataPlane.serve``'s work): what the route's endpoint does, the
        verifier asked and its verdict written by ``verdict_json``, with neither a response
        object nor the credit markers (``verdict_json`` writes credits exactly itself)."""
        send = exchange.send
        authenticated = await _authenticate(self, scope, head, receive, send)
        if authenticated is None:
            return True
        request, principal, services = authenticated
        asked = _verify_request(head, body)
        if asked is None:
            return False  # not the happy path: the route answers, with its own error document
        try:
            verdict = await services.verifier.verify(principal, asked)
        except errors.KeyplaneError as exc:
            await problems.error_response(request, exc)(scope, receive, send)
            return True
        await exchange.json(verdict_json(verdict))
        return True


def lean_verify(route: APIRoute) -> LeanVerify | None:
    """The lean form of the verify route; ``None`` (FastAPI answers every verify) unless its
    endpoint is exactly ``(body, principal, verifier)``, its body the verify body model that
    ``routes.verify.service_request`` reads, and its principal held to a scope."""
    endpoint = route.endpoint
    if list(inspect.signature(endpoint).parameters) != ["body", "principal", "verifier"]:
        return None
    hints = typing.get_type_hints(endpoint, include_extras=True)
    scope = _required_scope(hints["principal"])
    if hints["body"] is not VerifyRequest or not scope:
        return None
    return LeanVerify(route, VerifyRequest, scope)


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

    async def answer(
        self, scope: Scope, head: RequestHead, body: bytes, receive: Receive, exchange: _Exchange
    ) -> bool:
        """Answer a usage report (``DataPlane.serve``'s work)."""
        send = exchange.send
        authenticated = await _authenticate(self, scope, head, receive, send)
        if authenticated is None:
            return True
        request, principal, _services = authenticated
        parsed = _parse(self.body_model, head, body)
        idempotency_key = _idempotency_key(self, head)
        if parsed is None or idempotency_key is _INVALID:
            return False
        # As FastAPI's sub-response: no status until the endpoint sets one.
        status = Response()
        status.status_code = None  # type: ignore[assignment]
        usage = await get_usage(request)

        async def answer() -> Response:
            recorded = await self.endpoint(
                body=parsed,
                principal=principal,
                usage=usage,
                response=status,
                idempotency_key=idempotency_key,
            )
            # What FastAPI renders for the response model (compact JSON, non-ASCII kept as
            # is), serialised by pydantic in one step instead of a dict then json.dumps.
            return Response(
                self.answer_model.model_validate(recorded).model_dump_json().encode(),
                status_code=status.status_code or self.status,
                media_type="application/json",
            )

        await _respond(request, answer(), scope, receive, send)
        return True


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


class _Exchange:
    """One answered request's ``send``: the request id and the security headers added to the
    answer's head, as the middleware stack adds them, and its status remembered."""

    __slots__ = ("_added", "_id", "_no_store", "_send", "_tail", "status")

    def __init__(
        self,
        send: Send,
        access: Access,
        headers: ResponseHeaders,
        path: str,
        tails: tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]],
    ) -> None:
        self._send = send
        self._added = headers.added
        self._id = (observe.HEADER, access.request_id.encode("ascii"))
        self._no_store = headers.no_store(path)
        #: What ``headers.added`` puts after a JSON answer's own headers on this path
        #: (``DataPlane.tails``, made once).
        self._tail = tails[self._no_store]
        #: The answer's status, once its head is sent.
        self.status: int | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [*message.get("headers", ()), self._id]
            message = {**message, "headers": self._added(headers, self._no_store)}
        await self._send(message)

    async def json(self, body: bytes) -> None:
        """A 200 JSON answer: what :meth:`send` makes of ``_json_headers``, put together at
        once (the route's two headers, the request id, then the stack's, which none of
        those three is)."""
        self.status = 200
        headers = _json_headers(body)
        headers.append(self._id)
        headers += self._tail
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


Work = Callable[[Scope, RequestHead, bytes, Receive, _Exchange], Awaitable[bool]]


class DataPlane:
    """Verify, usage reports, forward auth and healthz, answered ahead of the middleware stack
    and FastAPI's router (``api.app.KeyplaneApp`` asks :meth:`answerer` first).

    Each answer gets what the stack would give it, from the same parts: the header and body
    limits (a request over either goes to the stack, which refuses it), the request id, metrics
    and access log line (:class:`~keyplane.api.observe.Observer`), the security headers
    (:class:`~keyplane.api.security_headers.ResponseHeaders`), and the stack's 500 document for
    an unexpected error. ``fallback`` is the whole stack (FastAPI's ``__call__``), given the
    body again for anything this does not answer itself.
    """

    def __init__(
        self,
        fallback: ASGIApp,
        *,
        observer: Observer,
        headers: ResponseHeaders,
        header_limits: HeaderLimits,
        max_body_bytes: int,
        verify: LeanVerify | None,
        health: APIRoute,
        version: str,
        auth: dict[str, APIRoute] | None = None,
        auth_any_path: dict[str, APIRoute] | None = None,
        usage: LeanUsage | None = None,
    ) -> None:
        self.fallback = fallback
        self.observer = observer
        self.headers = headers
        self.header_limits = header_limits
        self.max_body_bytes = max_body_bytes
        self.verify = verify
        self.usage = usage
        self.health = health
        # What FastAPI renders for the healthz route's dict: compact JSON. Its headers, made
        # once: the route's, the request id, then the stack's (which it cannot have set).
        self.health_body = b'{"status":"ok","version":"%s"}' % version.encode("ascii")
        self.health_headers = _json_headers(self.health_body)
        #: The stack's headers after an answer that sets none of them: they depend only on
        #: whether its path is kept from caches (indexed by ``headers.no_store(path)``).
        self.tails = (headers.added((), False), headers.added((), True))
        self.health_added = self.tails[headers.no_store("/healthz")]
        self.auth = auth or {}
        self.auth_any_path = auth_any_path or {}

    def answerer(self, scope: Scope) -> tuple[APIRoute, Work | None] | None:
        """The route and the work that answer this HTTP request here (``None``: healthz's
        fixed answer); ``None``: the stack answers it."""
        path = scope["path"]
        method = scope["method"]
        if path == "/v1/verify":
            if method == "POST" and self.verify is not None:
                return self.verify.route, self.verify.answer
        elif path == "/v1/usage":
            if method == "POST" and self.usage is not None:
                return self.usage.route, self.usage.answer
        elif path == "/healthz":
            if method == "GET" and not scope["query_string"]:
                return self.health, None
        elif path == "/v1/auth":
            if method in self.auth:
                return self.auth[method], self._forward_auth
        elif path.startswith("/v1/auth/") and method in self.auth_any_path:
            return self.auth_any_path[method], self._forward_auth
        return None

    async def serve(
        self, route: APIRoute, work: Work | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """What every answer here shares: the limits, the body, the observation, the headers,
        the 500. ``work`` answers with the body; ``False``: it sent nothing, the stack answers."""
        started = time.perf_counter()  # as the stack's observer: the body's arrival counts
        head = RequestHead(scope)
        if head.over(self.header_limits, self.max_body_bytes):
            await self.fallback(scope, receive, send)
            return
        if head.bodiless:
            body = b""  # nothing to wait for (healthz, forward auth): as the server would give
        else:
            read_whole, read = await read_body(receive, self.max_body_bytes)
            if read_whole is None:
                await self.fallback(scope, replay(read, receive), send)
                return
            body = read_whole
        if work is None:
            await self._healthz(scope, head, started, send)
            return
        access = self.observer.begin_with(scope, head.request_id)
        scope["route"] = route
        exchange = _Exchange(send, access, self.headers, scope["path"], self.tails)
        answered = True
        try:
            answered = await work(scope, head, body, receive, exchange)
        except Exception as exc:
            # As the stack's ServerErrorMiddleware: the routes' 500 document, then the error
            # goes on up to the server, which logs it.
            if exchange.status is None:
                request = Request(scope, receive)
                await (await problems.unexpected_error(request, exc))(scope, receive, exchange.send)
            raise
        finally:
            if answered:
                status = exchange.status or 500
                self.observer.end(scope, access, status, time.perf_counter() - started)
        if not answered:
            await self.fallback(scope, _replay(body, receive), send)

    async def _healthz(self, scope: Scope, head: RequestHead, started: float, send: Send) -> None:
        access = self.observer.begin_with(scope, head.request_id)
        scope["route"] = self.health
        status = 500  # as the stack counts an answer that never started
        try:
            request_id = (observe.HEADER, access.request_id.encode("ascii"))
            headers = [*self.health_headers, request_id, *self.health_added]
            status = 200
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": self.health_body})
        finally:
            self.observer.end(scope, access, status, time.perf_counter() - started)

    async def _forward_auth(
        self, scope: Scope, head: RequestHead, body: bytes, receive: Receive, exchange: _Exchange
    ) -> bool:
        # The route's endpoint answers every case itself (its refusals are its own documents);
        # only an error from below (storage, limiter) is left to the problem handler.
        route: APIRoute = scope["route"]
        path = scope["path"]
        if path != "/v1/auth":
            scope["path_params"] = {"path": path[len("/v1/auth/") :]}
        receive = _replay(body, receive)
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request, await get_gateway(request))
        except errors.KeyplaneError as exc:
            response = problems.error_response(request, exc)
        await response(scope, receive, exchange.send)
        return True


async def _authenticate(
    lean: LeanRoute, scope: Scope, head: RequestHead, receive: Receive, send: Send
) -> tuple[Request, Principal, Services] | None:
    """Who asks, held to the route's scope before the body is read, and the app's services;
    ``None`` when this answered already (refused)."""
    request = ExactJsonRequest(scope, receive)
    runtime = scope["app"].state.runtime  # read once (deps.services_of reads the same)
    try:
        principal = await principal_of(
            request, head.authorization, head.forwarded_for, head.real_ip, head.user_agent, runtime
        )
        require_scope(principal, lean.scope)
    except errors.KeyplaneError as exc:
        await problems.error_response(request, exc)(scope, receive, send)
        return None
    return request, principal, runtime.services


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


def _idempotency_key(lean: LeanUsage, head: RequestHead) -> Any:
    """The ``Idempotency-Key`` header as the route's annotation validates it (``None`` when
    absent); ``_INVALID`` when it fails, so the route answers with its own 422."""
    value = head.idempotency_key
    if value is None:
        return None
    try:
        return lean.idempotency_key.validate_python(value)
    except ValidationError:
        return _INVALID


def _verify_request(head: RequestHead, body: bytes) -> service.VerifyRequest | None:
    """What a verify body asks, as the route reads it; ``None`` for anything unusual."""
    if not head.json:
        return None  # FastAPI decides what other content types mean
    try:
        # As ExactJsonRequest reads it: numbers keep their text, for exact credits.
        document = loads_exact(body)
        plain = plain_request(document)
        if plain is not None:
            return plain
        return service_request(VerifyRequest.model_validate(document))
    except Exception:  # whatever it is, the route reproduces it and answers it
        return None


def _parse(model: type[BaseModel], head: RequestHead, body: bytes) -> BaseModel | None:
    """The validated body, as the route would read it; ``None`` for anything unusual."""
    if not head.json:
        return None  # FastAPI decides what other content types mean
    try:
        # As ExactJsonRequest reads it: numbers keep their text, for exact credits.
        return model.model_validate(loads_exact(body))
    except Exception:  # whatever it is, the route reproduces it and answers it
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body again, then whatever else the client sends (a disconnect)."""
    return replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", b"%d" % len(body)), (b"content-type", JSON)]
