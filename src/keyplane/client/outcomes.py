"""What a lease's holder reports when it gives the lease back, read from the exception it saw.

The one place that decides it, for the SDK's ``use_key`` and for ``keyplane.vault`` (which
re-exports these names): :class:`Unauthorized`, or any exception carrying an HTTP status 401 or
403, means the provider refused the credential (it gets disabled); :class:`RateLimited`, or a
status 429, means the provider throttled it (it cools down, for ``Retry-After`` seconds when
the exception carries that header). Anything else says nothing about the credential: ``ok``.

"Carrying a status" is duck-typed so that no provider SDK has to be imported: ``status_code``
on the exception (OpenAI, Anthropic) or on its ``response`` (``httpx.HTTPStatusError``,
``requests.HTTPError``).
"""

from __future__ import annotations

from typing import Any, Literal

Outcome = Literal["ok", "unauthorized", "rate_limited"]

#: The longest cool-down a release may ask for (the server's limit).
MAX_RETRY_AFTER = 86_400


class Unauthorized(Exception):
    """Raise inside ``use_key`` when the provider refused the credential."""


class RateLimited(Exception):
    """Raise inside ``use_key`` when the provider rate-limited the credential.

    Args:
        message: What happened, for the traceback.
        retry_after: Seconds the provider asked to wait; the server's default (60) when None.
    """

    def __init__(self, message: str = "rate limited", retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def outcome_of(exc: BaseException | None) -> tuple[Outcome, int | None]:
    """The outcome to report for what ended a ``use_key`` block, and a cool-down if known.

    Args:
        exc: The exception that left the block, or None when it ended normally.

    Returns:
        ``(outcome, retry_after)``: ``retry_after`` is set only for ``rate_limited`` when the
        exception said how long to wait.
    """
    if exc is None:
        return "ok", None
    if isinstance(exc, Unauthorized):
        return "unauthorized", None
    if isinstance(exc, RateLimited):
        return "rate_limited", _bounded(exc.retry_after)
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    if status in (401, 403):
        return "unauthorized", None
    if status == 429:
        return "rate_limited", _retry_after(getattr(response, "headers", None))
    return "ok", None


def _bounded(seconds: Any) -> int | None:
    if seconds is None or isinstance(seconds, bool):
        return None
    try:
        return max(0, min(MAX_RETRY_AFTER, int(seconds)))
    except (TypeError, ValueError, OverflowError):
        return None


def _retry_after(headers: Any) -> int | None:
    try:
        value = headers.get("retry-after") if headers is not None else None
        return None if value is None else _bounded(float(value))
    except (TypeError, ValueError, AttributeError):
        # An HTTP date or garbage: the server's default cool-down is the safer guess.
        return None
