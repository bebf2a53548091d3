"""Keyplane errors as gRPC statuses; the gRPC side of ``api/problems.py``.

The HTTP status of an error stays decided in one table (``api.problems.STATUS_BY_ERROR``); this
module maps that status to a gRPC code, as Google's HTTP/gRPC mapping does
(https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md, read in reverse).
The stable Keyplane code travels in the trailing metadata ``keyplane-code``.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
from pydantic import ValidationError as PydanticValidationError

from keyplane import errors
from keyplane.api.problems import status_for

log = logging.getLogger(__name__)

#: Trailing metadata key holding the stable Keyplane error code.
CODE_KEY = "keyplane-code"

GRPC_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    402: grpc.StatusCode.FAILED_PRECONDITION,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code_for(exc: errors.KeyplaneError) -> grpc.StatusCode:
    """The gRPC code of ``exc``, through its HTTP status."""
    return GRPC_BY_HTTP.get(status_for(exc), grpc.StatusCode.INTERNAL)


async def abort(context: Any, code: grpc.StatusCode, keyplane_code: str, message: str) -> NoReturn:
    """End the call with ``code``, the Keyplane code in the trailers and ``message``."""
    await context.abort(code, message, trailing_metadata=((CODE_KEY, keyplane_code),))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


async def abort_with(context: Any, exc: Exception) -> NoReturn:
    """End the call for ``exc``: a Keyplane error as its code, a pydantic one as a validation
    failure (never echoing the input: it may be a secret), anything else as INTERNAL."""
    if isinstance(exc, errors.KeyplaneError):
        code = grpc_code_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.error("gRPC call failed: %s", exc.message, exc_info=exc)
        await abort(context, code, exc.code, exc.message)
    if isinstance(exc, PydanticValidationError):
        await abort(
            context, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", validation_summary(exc)
        )
    log.error("unhandled gRPC error", exc_info=exc)
    await abort(context, grpc.StatusCode.INTERNAL, "INTERNAL_ERROR", "an internal error occurred")


def validation_summary(exc: PydanticValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
