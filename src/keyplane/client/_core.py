"""What the sync and async clients share: configuration, request building, response parsing,
error mapping and the retry schedule. Only the sending (and sleeping) differs between them.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import httpx

from keyplane import __version__
from keyplane.client import errors

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8400"
#: Visible ASCII only: what a bearer token may hold (RFC 6750 is stricter still).
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
#: Statuses worth another attempt: the same request may well succeed a moment later.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: 503s that a retry cannot cure: the server is configured that way until restarted.
PERMANENT_CODES = frozenset({"VAULT_NOT_CONFIGURED"})
REPLAYED_HEADER = "Idempotent-Replayed"

Params = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API operation: how to ask, and how to read the answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Params = ()
    body: Any = None
    idempotency_key: str | None = None
    #: False for calls the server does not deduplicate (a vault lease): they are retried only
    #: when the request provably never left (no connection could be made), never after a
    #: timeout, a dropped connection or a 5xx, any of which may hide a lease taken.
    retry_after_send: bool = True
    #: When set, a 404 or 409 answering a *retry* means the first attempt did the work (a
    #: release whose answer was lost): the call returns ``gone()`` instead of raising.
    gone: Callable[[], T] | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before another attempt.

    Backoff is exponential with full jitter (a uniform draw in ``[0, min(max_delay,
    base_delay * 2**attempt)]``), so many clients failing together do not retry in lockstep.
    A server's ``Retry-After`` is honoured as given, up to ``max_retry_after``; a longer wait
    is not attempted and the error is raised instead (its ``retry_after`` says how long).

    Attributes:
        max_retries: Attempts after the first; 0 disables retrying.
        base_delay: Seconds; the first backoff is drawn from ``[0, base_delay]``.
        max_delay: Cap of the backoff in seconds.
        max_retry_after: The longest ``Retry-After`` (seconds) the client waits for.
    """

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def backoff(self, attempt: int, draw: Callable[[float, float], float]) -> float:
        """The jittered wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        return draw(0.0, min(self.max_delay, self.base_delay * 2.0**attempt))


@dataclass
class Config:
    """Everything a client needs besides its transport."""

    url: str
    management_key: str | None
    timeout: float
    retry: RetryPolicy
    headers: dict[str, str] = field(default_factory=dict)
    draw: Callable[[float, float], float] = random.uniform

    @classmethod
    def resolve(
        cls,
        url: str | None,
        management_key: str | None,
        timeout: float,
        max_retries: int | None,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> Config:
        """Arguments first, then ``KEYPLANE_URL`` / ``KEYPLANE_MANAGEMENT_KEY``, then defaults."""
        policy = retry or RetryPolicy()
        if max_retries is not None:
            if max_retries < 0:
                raise ValueError("max_retries must be >= 0")
            policy = RetryPolicy(
                max_retries, policy.base_delay, policy.max_delay, policy.max_retry_after
            )
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        base = url or os.environ.get("KEYPLANE_URL") or DEFAULT_URL
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"the Keyplane URL must start with http:// or https://: {base!r}")
        key = (management_key or os.environ.get("KEYPLANE_MANAGEMENT_KEY") or "").strip() or None
        if key is not None and not _HEADER_SAFE.fullmatch(key):
            # Never echo the value: it is a secret, however mangled.
            raise ValueError("the management key has characters that cannot be sent in a header")
        return cls(base.rstrip("/"), key, timeout, policy, dict(headers or {}))

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``."""
        headers = {"User-Agent": f"keyplane-python/{__version__}", **self.headers}
        if self.management_key is not None:
            headers["Authorization"] = f"Bearer {self.management_key}"
        return {"base_url": self.url, "headers": headers, "timeout": self.timeout}


def idempotency_key_for(call: Call[Any]) -> str | None:
    """The ``Idempotency-Key`` of one call: generated once, then reused by all its retries."""
    if call.method != "POST":
        return None
    return call.idempotency_key or f"kpsdk-{uuid.uuid4().hex}"


def request_options(call: Call[Any], idempotency_key: str | None) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client.build_request``."""
    options: dict[str, Any] = {"method": call.method, "url": call.path}
    if call.params:
        options["params"] = list(call.params)
    if call.body is not None:
        options["json"] = jsonable(call.body)
    if idempotency_key is not None:
        options["headers"] = {"Idempotency-Key": idempotency_key}
    return options


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 UTC text and Decimals as exact decimal text."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def credits(value: Decimal | int | float | str) -> str:
    """Credits as exact decimal text (a float through its shortest form: 0.1 is 0.1)."""
    if isinstance(value, bool):
        raise TypeError("credits are a number, not a boolean")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def api_error(response: httpx.Response) -> errors.APIError:
    """The exception for an error response, from its problem+json ``code`` and ``detail``."""
    status = response.status_code
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text[:500]
    code = f"HTTP_{status}"
    detail = response.reason_phrase or "error"
    if isinstance(body, dict):
        if isinstance(body.get("code"), str):
            code = body["code"]
        if isinstance(body.get("detail"), str):
            detail = body["detail"]
    return errors.error_for(status, code, detail, body, retry_after(response))


def transport_error(exc: httpx.RequestError, url: str) -> errors.ConnectionError:
    """Our exception for an httpx transport failure (the message names the server, no secret)."""
    if isinstance(exc, httpx.TimeoutException):
        return errors.TimeoutError(f"no answer from {url} in time ({type(exc).__name__})")
    return errors.ConnectionError(f"cannot reach {url}: {type(exc).__name__}: {exc}")


#: Transport failures that happen before a byte of the request is sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def never_sent(exc: BaseException) -> bool:
    """Whether a transport failure provably happened before the request left."""
    return isinstance(exc, _NOT_SENT)


def next_delay(
    config: Config,
    attempt: int,
    failure: errors.KeyplaneError,
    call: Call[Any] | None = None,
    cause: BaseException | None = None,
) -> float | None:
    """Seconds to wait before another attempt, or None to give up and raise ``failure``.

    Every method is retried: POSTs carry an Idempotency-Key for exactly this. A call marked
    ``retry_after_send=False`` is retried only when ``cause`` shows the request never left.
    """
    if attempt >= config.retry.max_retries:
        return None
    if call is not None and not call.retry_after_send and not never_sent(cause or failure):
        return None
    if isinstance(failure, errors.ConnectionError):
        return config.retry.backoff(attempt, config.draw)
    if isinstance(failure, errors.APIError) and failure.code in PERMANENT_CODES:
        return None
    if isinstance(failure, errors.APIError) and failure.status in RETRY_STATUSES:
        wait = failure.retry_after if isinstance(failure, errors.RateLimitedError) else None
        if wait is not None:
            return wait if wait <= config.retry.max_retry_after else None
        return config.retry.backoff(attempt, config.draw)
    return None


def settled_by_earlier_attempt(call: Call[T], attempt: int, failure: BaseException) -> bool:
    """Whether ``failure`` on a retry only says that an earlier attempt already did the work."""
    return (
        call.gone is not None
        and attempt > 0
        and isinstance(failure, errors.APIError)
        and failure.status in (404, 409)
    )


def outcome(call: Call[T], response: httpx.Response) -> T:
    """The parsed result of a successful response; raises the mapped error otherwise."""
    if response.status_code >= 400:
        raise api_error(response)
    try:
        return call.parse(response)
    except (ValueError, KeyError, TypeError) as exc:
        # A proxy's HTML page or a truncated body: say so, without a pydantic traceback.
        raise errors.APIError(
            response.status_code,
            "UNEXPECTED_RESPONSE",
            f"the server's answer to {call.method} {call.path} could not be read",
            response.text[:500],
        ) from exc
