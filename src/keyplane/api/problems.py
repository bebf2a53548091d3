"""RFC 9457 problem+json responses; the one place where errors meet HTTP status codes."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from keyplane import errors

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """The RFC 9457 body of every error response (documentation only)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    code: str = Field(description="stable, machine-readable error code")
    detail: str
    errors: list[dict[str, str]] | None = Field(
        default=None, description="the offending fields, on VALIDATION_FAILED"
    )


def _documented(description: str, **extra: Any) -> dict[str, Any]:
    content = {PROBLEM_MEDIA_TYPE: {"schema": Problem.model_json_schema()}}
    return {"description": description, "content": content, **extra}


#: The error responses of every ``/v1`` operation, for the OpenAPI document. Declaring 422
#: here also replaces FastAPI's default ``HTTPValidationError``, which these bodies are not.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("the request body could not be parsed as JSON"),
    401: _documented(
        "no, or an invalid, management key",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    ),
    403: _documented("the management key lacks the scope or project this needs"),
    404: _documented("no such object, or not visible to this management key"),
    409: _documented("the object's state forbids the operation"),
    413: _documented("the request body is over the size limit (PAYLOAD_TOO_LARGE)"),
    422: _documented("the request breaks a validation rule"),
    503: _documented("the database is unavailable"),
}

#: The HTTP status of every error class, the only such table. A class not named here takes its
#: nearest named ancestor's (``status_for`` walks the MRO); ``tests/test_errors.py`` insists
#: that every class of ``keyplane.errors`` is named, so a new one is a decision, not a default.
STATUS_BY_ERROR: dict[type[errors.KeyplaneError], int] = {
    errors.KeyplaneError: 500,
    errors.ValidationError: 422,
    errors.WebhookVerificationError: 400,
    errors.AuthenticationError: 401,
    errors.PermissionDeniedError: 403,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.ConfigurationError: 500,
    errors.VaultNotConfiguredError: 503,
    # The server can be fixed by installing an extra; the request itself is fine.
    errors.ExportUnavailableError: 501,
    errors.StorageError: 503,
    errors.LimiterUnavailableError: 503,
    errors.CountersUnsettledError: 503,
    errors.RegistryUnavailableError: 503,
    errors.VaultError: 500,
    errors.VaultKeyError: 503,
    errors.VaultIntegrityError: 500,
    # Another instance, or this one later, can serve it.
    errors.CapacityError: 503,
    errors.EmailDeliveryError: 502,
    # NO_CREDENTIAL is a 404 (nothing can serve this request); the other refusals are 429s
    # that pass when time does.
    errors.LeaseRefusedError: 429,
    errors.NoCredentialError: 404,
    errors.AllRateLimitedError: 429,
    errors.AllAtMaxConcurrencyError: 429,
    # Seed 002's names (keyplane.compat.api_service_handler), as their Keyplane counterparts.
    errors.KeyNotFoundError: 404,
    errors.StorageNotInitializedError: 409,
    errors.EncryptionError: 500,
    errors.NoAvailableKeyError: 404,
    errors.RateLimitExceededError: 429,
    errors.MaxConcurrentExceededError: 429,
}

#: Where the compatibility surfaces (``api.compat``) answer differently: the vendors' APIs
#: answer every bad request with 400, where ``/v1`` says 422.
COMPAT_STATUS_BY_ERROR: dict[type[errors.KeyplaneError], int] = {
    errors.ValidationError: 400,
}

_CODES_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_FAILED",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}


def problem(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def status_for(exc: errors.KeyplaneError, *, compat: bool = False) -> int:
    """The HTTP status of ``exc``: its nearest class in the table (``compat``: the vendors')."""
    for error_type in type(exc).__mro__:
        if compat and error_type in COMPAT_STATUS_BY_ERROR:
            return COMPAT_STATUS_BY_ERROR[error_type]
        if error_type in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[error_type]
    return 500


async def _keyplane_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, cast(errors.KeyplaneError, exc))


def error_response(request: Request, exc: errors.KeyplaneError) -> JSONResponse:
    """The problem document for ``exc``: what every route answers, and the lean data plane
    (``api/data_plane.py``) too, which runs outside FastAPI's exception handlers."""
    status = status_for(exc)
    if isinstance(exc, errors.PermissionDeniedError):
        _count_denial(request, exc)
    # A vault without a master key is a configuration the operator chose, warned about once
    # at startup (services/runtime.py): no traceback for each request it refuses.
    if status >= 500 and not isinstance(exc, errors.VaultNotConfiguredError):
        log.error("request failed: %s", exc.message, exc_info=exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    retry_after = exc.extra.get("retry_after")
    if isinstance(retry_after, int):
        headers = {"Retry-After": str(retry_after)}
    return problem(status, exc.code, exc.message, headers, **exc.extra)


def _count_denial(request: Request, exc: errors.PermissionDeniedError) -> None:
    """A 403 goes to the audit log, counted (``permission.denied``, aggregated per key)."""
    principal = getattr(request.state, "principal", None)
    runtime = getattr(request.app.state, "runtime", None)
    if principal is not None and runtime is not None:
        runtime.security.permission_denied(principal.org_id, principal.actor, exc.code)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    details = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return problem(400, "INVALID_JSON", "the request body is not valid JSON")
        # Never echo the offending input: it may be a key or other secret.
        location = ".".join(str(part) for part in error.get("loc", ()))
        details.append({"loc": location, "msg": str(error.get("msg", "invalid"))})
    summary = "; ".join(f"{d['loc']}: {d['msg']}" for d in details[:5])
    return problem(422, "VALIDATION_FAILED", f"invalid request: {summary}", errors=details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    code = _CODES_BY_STATUS.get(exc.status_code, "HTTP_ERROR")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem(exc.status_code, code, detail, headers or None)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path (RFC 9110 section 15.5.6).

    Starlette raises the 405 from the first route whose path matched, so its ``Allow`` named
    that route's methods only: with ``GET /v1/keys`` and ``POST /v1/keys`` as two routes, a
    DELETE was told ``Allow: POST``. Here the router is asked, method by method, whether a
    request like this one would reach a route, through the public ``matches`` of each.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    """The 500 document for an error nothing handled (and its traceback, logged)."""
    log.error("unhandled error", exc_info=exc)
    return problem(500, "INTERNAL_ERROR", "an internal error occurred")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.KeyplaneError, _keyplane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, unexpected_error)
