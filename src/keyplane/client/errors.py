"""The SDK's exceptions.

::

    KeyplaneError                   root of everything the SDK raises
    ├── APIError                    the server answered with an error (status, code, detail, body)
    │   ├── ValidationError         400 / 422: the request breaks a rule
    │   ├── AuthenticationError     401: no, or an unknown, management key
    │   ├── PermissionDeniedError   403: the management key lacks a scope or project
    │   ├── NotFoundError           404: no such object (or not visible to this key)
    │   │   └── NoCredentialError           vault lease: nothing matches or has allowance left
    │   ├── ConflictError           409: the object's state forbids the operation
    │   ├── RateLimitedError        429: slow down; ``retry_after`` seconds when the server said
    │   │   ├── AllRateLimitedError         vault lease: every match is cooling down
    │   │   └── AllAtMaxConcurrencyError    vault lease: every match is at max concurrency
    │   └── ServerError             5xx: the server failed
    ├── ConnectionError             the server could not be reached (refused, reset, DNS, ...)
    │   └── TimeoutError            no answer within the configured timeout
    └── StreamDroppedError          a live usage stream was read too slowly and ended

These are the SDK's own classes, distinct from the server's ``keyplane.errors`` (which the SDK
never imports). ``ConnectionError`` and ``TimeoutError`` shadow the builtins of the same name
inside this module only; import them qualified (``keyplane.client.errors.ConnectionError``) or
through ``keyplane.client``.

The three lease refusals also derive from :class:`LeaseRefusedError`, so one ``except`` catches
them all; each has ``retry_after`` (seconds, or None when waiting will not help).
"""

from __future__ import annotations

from typing import Any


class KeyplaneError(Exception):
    """Root of every exception the SDK raises."""


class APIError(KeyplaneError):
    """The server refused or failed a request.

    Attributes:
        status: The HTTP status code.
        code: The stable, machine-readable ``code`` of the problem+json body (``HTTP_<status>``
            when the body had none).
        detail: The human-readable explanation (never contains a secret: the server does not
            echo inputs back).
        body: The decoded response body (a dict for JSON bodies, else the text, cut short).
    """

    def __init__(self, status: int, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class ValidationError(APIError):
    """400 or 422: the request is malformed or breaks a validation rule."""


class AuthenticationError(APIError):
    """401: no management key, or one the server does not know."""


class PermissionDeniedError(APIError):
    """403: the management key lacks the scope or project this call needs."""


class NotFoundError(APIError):
    """404: no such object, or one this management key cannot see."""


class ConflictError(APIError):
    """409: the object's state forbids the operation (e.g. ``PLAN_IN_USE``)."""


class RateLimitedError(APIError):
    """429: too many requests.

    Attributes:
        retry_after: Seconds the server asked to wait (``Retry-After``), or None.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, detail, body)
        self.retry_after = retry_after


class LeaseRefusedError(APIError):
    """A vault lease was refused: no credential can be leased now.

    Attributes:
        retry_after: Seconds until one may be free again, or None when unknown.
    """

    retry_after: float | None = None


class NoCredentialError(NotFoundError, LeaseRefusedError):
    """404 ``NO_CREDENTIAL``: no credential matches the lease, or none has allowance left."""


class AllRateLimitedError(RateLimitedError, LeaseRefusedError):
    """429 ``ALL_RATE_LIMITED``: every matching credential is cooling down."""


class AllAtMaxConcurrencyError(RateLimitedError, LeaseRefusedError):
    """429 ``ALL_AT_MAX_CONCURRENCY``: every matching credential has all its leases out."""


class ServerError(APIError):
    """5xx: the server (or its database) failed; usually worth retrying later."""


class ConnectionError(KeyplaneError):
    """The server could not be reached: refused, reset, unresolvable, or a broken response."""


class TimeoutError(ConnectionError):
    """The server did not answer within the configured timeout."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitedError,
}


_REFUSALS: dict[str, type[RateLimitedError]] = {
    "ALL_RATE_LIMITED": AllRateLimitedError,
    "ALL_AT_MAX_CONCURRENCY": AllAtMaxConcurrencyError,
}


def error_for(
    status: int, code: str, detail: str, body: Any, retry_after: float | None
) -> APIError:
    """The exception for an error response of ``status`` (and, for vault refusals, ``code``)."""
    if status == 404 and code == "NO_CREDENTIAL":
        refused = NoCredentialError(status, code, detail, body)
        refused.retry_after = retry_after
        return refused
    if status == 429 and code in _REFUSALS:
        return _REFUSALS[code](status, code, detail, body, retry_after)
    if status == 429:
        return RateLimitedError(status, code, detail, body, retry_after)
    if status >= 500:
        return ServerError(status, code, detail, body)
    return _BY_STATUS.get(status, APIError)(status, code, detail, body)


class StreamDroppedError(KeyplaneError):
    """The server dropped a live usage stream this client read too slowly.

    ``missed`` is how many events it did not receive. Subscribe again to go on (what was
    missed is in the ledger, not in the stream).
    """

    def __init__(self, missed: int) -> None:
        super().__init__(f"the usage stream was dropped (slow consumer); {missed} events missed")
        self.missed = missed
