"""What the data plane reads of a request's headers, in one pass.

The data plane (``api/data_plane.py``) needs eight things of a request's head: its size
against the header limits, the declared body length, whether there is a body at all, the
inbound request id, the caller's ``Authorization``, ``X-Forwarded-For``, ``X-Real-IP`` and
``User-Agent``, a usage report's ``Idempotency-Key``, and whether the body claims to be
anything but JSON. Read one by one they took
five passes over the headers per verify; :class:`RequestHead` takes one. Each is read exactly
as its reference reads it (``header_limit.over_limits``, ``body_limit.content_length``,
``observe.Observer.begin``, ``deps.get_principal``, the content-type check), the first header
of a name winning, and ``tests/api/test_request_head.py`` holds them equal for any list of
headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keyplane.api.header_limit import HeaderLimits

JSON = b"application/json"

#: The headers read, by the slot their first value goes to.
_SLOTS = {
    b"content-length": 0,
    b"x-request-id": 1,
    b"authorization": 2,
    b"x-forwarded-for": 3,
    b"x-real-ip": 4,
    b"user-agent": 5,
    b"transfer-encoding": 6,
    b"idempotency-key": 7,
}
_CONTENT_TYPE = b"content-type"


class RequestHead:
    """One request's head, as the data plane uses it."""

    __slots__ = (
        "authorization",
        "bodiless",
        "content_length",
        "count",
        "forwarded_for",
        "idempotency_key",
        "json",
        "real_ip",
        "request_id",
        "size",
        "user_agent",
    )

    def __init__(self, scope: Mapping[str, Any]) -> None:
        headers = scope.get("headers", ())
        found: list[bytes | None] = [None] * len(_SLOTS)
        # As on the wire: the target counts, and ": " and CRLF for every field.
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        json = True
        for name, value in headers:
            size += len(name) + len(value) + 4
            slot = _SLOTS.get(name)
            if slot is not None:
                if found[slot] is None:
                    found[slot] = value
            elif name == _CONTENT_TYPE and value != JSON:
                json = False
        #: Header fields, and bytes of target and headers (``header_limit.over_limits``).
        self.count = len(headers)
        self.size = size
        #: The declared body length; ``None`` when absent or not a number.
        self.content_length = _length(found[0])
        #: The request has no body (RFC 9112 section 6.3: neither ``Transfer-Encoding`` nor a
        #: ``Content-Length`` other than 0), so there is nothing to read.
        self.bodiless = found[6] is None and (found[0] is None or self.content_length == 0)
        #: ``X-Request-Id`` as sent (``Observer.begin_with`` decides whether to keep it).
        self.request_id = found[1]
        self.authorization = _text(found[2])
        self.forwarded_for = _text(found[3])
        self.real_ip = _text(found[4])
        self.user_agent = _text(found[5])
        #: ``Idempotency-Key`` (usage reports).
        self.idempotency_key = _text(found[7])
        #: No ``Content-Type`` says anything but JSON (the route decides what others mean).
        self.json = json

    def over(self, limits: HeaderLimits, max_body_bytes: int) -> bool:
        """Over the header limits, or declaring a body over ``max_body_bytes``."""
        declared = self.content_length
        return (
            self.count > limits.max_count
            or self.size > limits.max_bytes
            or (declared is not None and declared > max_body_bytes)
        )


def _length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _text(value: bytes | None) -> str | None:
    # As Starlette's request.headers decodes them.
    return None if value is None else value.decode("latin-1")
