"""Errors in a compatibility surface's own format instead of problem+json.

Clients written for another vendor parse that vendor's error body, so each surface renders
every failure (validation, authentication, unknown object, unexpected error) itself. A custom
route class does it: the route handler, which parses the body and runs the dependencies, is
wrapped, so nothing raised while serving a compat route reaches the app-wide problem+json
handlers. A catch-all route answers unknown paths and methods under the surface's prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from keyplane import errors
from keyplane.api.exact import ExactJsonRoute
from keyplane.api.problems import status_for

log = logging.getLogger(__name__)

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong, in neutral terms; a surface's renderer turns it into its body."""

    status: int
    code: str
    message: str


#: Renders a failure as a surface's error response.
Renderer = Callable[[Failure], Response]


def failure_of(exc: Exception) -> Failure:
    """The status, stable code and client-safe message for any exception."""
    if isinstance(exc, errors.KeyplaneError):
        return Failure(status_for(exc, compat=True), exc.code, exc.message)
    if isinstance(exc, RequestValidationError):
        return _validation_failure(exc)
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return Failure(exc.status_code, HTTPStatus(exc.status_code).name, detail)
    log.error("unhandled error", exc_info=exc)
    return Failure(500, "INTERNAL_ERROR", "an internal error occurred")


def _validation_failure(exc: RequestValidationError) -> Failure:
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return Failure(400, "INVALID_JSON", "the request body is not valid JSON")
        # Never echo the offending input: it may be a key or other secret.
        location = ".".join(_shown(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return Failure(400, "VALIDATION_FAILED", "invalid request: " + "; ".join(parts[:5]))


def _shown(part: object) -> str:
    """A location segment fit for a message: an unknown field's name is client-chosen text."""
    text = str(part)[:64]
    return text if text.isprintable() else ascii(text)


def error_route(render: Renderer) -> type[APIRoute]:
    """An APIRoute class whose every failure is rendered by ``render``."""

    class CompatRoute(ExactJsonRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:  # every failure becomes the surface's error body
                    return render(failure_of(exc))

            return handle

    return CompatRoute


def add_fallback(router: APIRouter, render: Renderer) -> None:
    """Answer unknown paths (and methods) under the router's prefix in its own format.

    Added last, so real routes match first: a known path with a method no route serves gets
    405, anything else 404.
    """
    known = [route for route in router.routes if isinstance(route, APIRoute)]

    async def fallback(request: Request) -> Response:
        path = request.url.path
        allowed = sorted({m for r in known if r.path_regex.match(path) for m in r.methods or ()})
        if not allowed:
            return render(Failure(404, "NOT_FOUND", "no such endpoint"))
        response = render(Failure(405, "METHOD_NOT_ALLOWED", "method not allowed on this path"))
        response.headers["Allow"] = ", ".join(allowed)
        return response

    router.add_api_route("/{path:path}", fallback, methods=ALL_METHODS, include_in_schema=False)


def too_large(render: Renderer) -> Callable[[str], Response]:
    """The 413 for a body over the size limit, in the surface's format (for BodySizeLimit)."""

    def respond(detail: str) -> Response:
        response = render(Failure(413, "PAYLOAD_TOO_LARGE", detail))
        # The rest of the body is never read: the connection cannot be reused.
        response.headers["Connection"] = "close"
        return response

    return respond
