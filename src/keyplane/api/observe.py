"""Every request observed once: its id, its metrics, and its access log line.

A pure ASGI middleware, outermost, so that answers given by inner layers (413, 431, problem
documents) are counted and carry ``X-Request-Id`` too.

* **Request id**: a sane inbound ``X-Request-Id`` (1-64 characters of ``[A-Za-z0-9._:-]``,
  what gateways and tracers send) is kept, so a request can be followed across a proxy; any
  other value is ignored and an id is generated. It is returned as ``X-Request-Id``.
* **Metrics**: ``keyplane_http_request_duration_seconds`` by method, *route template*
  (``/v1/keys/{id_or_hash}``, never the path itself: a path can hold a key, and its values
  would make the label set unbounded) and status. A request no route matched is counted as
  ``<unmatched>``.
* **Access log** (``KEYPLANE_ACCESS_LOG``, on by default, replacing uvicorn's): one JSON line
  per request on the ``keyplane.access`` logger with the request id, method, route template,
  status, latency and the authenticated principal's id. Never the path, query, headers or
  body: those are where keys and secrets travel.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import time
from collections.abc import MutableMapping
from typing import Any

from keyplane.logging_config import iso_utc, line_writer, redact
from keyplane.metrics import HTTP_REQUESTS, LATENCY_BUCKETS, counted

log = logging.getLogger("keyplane.access")

HEADER = b"x-request-id"
#: The scope entry routes and dependencies fill in (:class:`Access`).
SCOPE_KEY = "keyplane.access"
UNMATCHED = "<unmatched>"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")
_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "WEBSOCKET")
)

Scope = MutableMapping[str, Any]
Message = dict[str, Any]


class Access:
    """What is known about one request by the time it is answered."""

    __slots__ = ("principal_id", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        #: The management key that authenticated (``api.deps.get_principal`` sets it).
        self.principal_id: str | None = None


def note_principal(scope: Scope, principal_id: str) -> None:
    """Record who made the request, for its access log line."""
    access = scope.get(SCOPE_KEY)
    if access is not None:
        access.principal_id = principal_id


def request_id_of(scope: Scope) -> str | None:
    """The request's id, once this middleware has seen it."""
    access = scope.get(SCOPE_KEY)
    return None if access is None else str(access.request_id)


def _inbound_id(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == HEADER:
            return value
    return None


def _kept_id(value: bytes | None) -> str | None:
    """An inbound request id, when it is one to keep."""
    if value is None or not _SANE_ID.fullmatch(value):
        return None
    text = value.decode("ascii")
    # A key pasted as a request id would be logged and echoed: refuse anything that
    # redaction would change.
    return text if redact(text) == text else None


def _new_id() -> str:
    # Unique, not secret: the id is echoed to the client and logged. Python's generator, not
    # os.urandom: that is a system call made without the GIL, so with a SQLite thread busy the
    # event loop would wait to get it back, on every request. The module's generator is
    # seeded from the system and reseeded in a forked worker.
    # Its 12 bytes in hex: the text of f"{bits:024x}", in half the time.
    return random.getrandbits(96).to_bytes(12, "big").hex()


class _Labelled:
    """What a (method, route, status) gets once: its histogram child, its log message and
    route as JSON text."""

    __slots__ = ("child", "message", "route")

    def __init__(self, child: Any, message: str, route: str) -> None:
        self.child = child
        self.message = message
        self.route = route


#: The access log line, as JsonFormatter writes the record (``checked_fields``): the same
#: JSON document, the latency written with its three decimals (``%.3f`` is the value
#: ``round(ms, 3)`` gives, at half the cost of that and its ``repr``).
_ACCESS_LINE = (
    '{"ts": "%s", "level": "info", "logger": "keyplane.access", "msg": %s, '
    '"request_id": "%s", "method": "%s", "route": %s, "status": %d, "latency_ms": %.3f, '
    '"principal_id": %s}\n'
)


def _access_line(
    created: float,
    known: _Labelled,
    request_id: str,
    method: str,
    status: int,
    elapsed: float,
    principal_id: str | None,
) -> str:
    return _ACCESS_LINE % (
        iso_utc(created),
        known.message,
        request_id,
        method,
        known.route,
        status,
        elapsed * 1000,
        _json_id(principal_id),
    )


# The same few management keys call over and over: each one's JSON text made once.
@functools.lru_cache(maxsize=1024)
def _json_id(value: str | None) -> str:
    return "null" if value is None else json.dumps(value)


class Observer:
    """Request ids, HTTP metrics and the access log (see the module docstring): the parts,
    shared by :class:`RequestObserver` and the data plane (``api/data_plane.py``), which
    answers its requests before the middleware stack and observes them itself."""

    def __init__(self, *, access_log: bool = True) -> None:
        self.access_log = access_log
        # (method, route, status) -> the histogram's child, counted in plain numbers on this
        # app's event loop: binding labels takes a lock, and so does each value the library
        # adds.
        self._children: dict[tuple[str, str, int], Any] = {}

    def begin(self, scope: Scope) -> Access:
        """The request's :class:`Access`, its id kept or made, and put in its scope."""
        return self.begin_with(scope, _inbound_id(scope["headers"]))

    def begin_with(self, scope: Scope, inbound_id: bytes | None) -> Access:
        """:meth:`begin`, with the request's ``X-Request-Id`` (its first) already read."""
        access = Access(_kept_id(inbound_id) or _new_id())
        scope[SCOPE_KEY] = access
        return access

    def end(self, scope: Scope, access: Access, status: int, elapsed: float) -> None:
        """Count the answered request and write its access log line."""
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        # The client writes the method: any other than these is one label, not many.
        method = scope.get("method", "WEBSOCKET")
        if method not in _METHODS:
            method = "OTHER"
        child_key = (method, route, status)
        known = self._children.get(child_key)
        if known is None:
            child = HTTP_REQUESTS.labels(method, route, str(status))
            kept = len(self._children) < 10_000
            known = _Labelled(
                # Kept: counted in plain numbers, folded in before a scrape (metrics.py).
                counted(child, LATENCY_BUCKETS) if kept else child,
                json.dumps(f"{method} {route} {status}"),
                json.dumps(route),
            )
            if kept:
                self._children[child_key] = known
        known.child.observe(elapsed)
        if not self.access_log or not log.isEnabledFor(logging.INFO):
            return
        writer = line_writer(log)
        if writer is not None:
            # ``keyplane serve``'s own configuration: the line written as its formatter would
            # write it, without the record and the handler chain (most of the line's cost).
            # Rendered when written, with the loop turn's other lines.
            writer.put_later(
                _access_line,
                time.time(),
                known,
                access.request_id,
                method,
                status,
                elapsed,
                access.principal_id,
            )
        else:
            # The record made and handed to the handlers directly: ``log.info`` would first
            # walk the stack for the caller's file and line (``findCaller``), a third of
            # the line's cost, to say what every access line says: this module.
            fields = {
                "request_id": access.request_id,
                "method": method,
                "route": route,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
                "principal_id": access.principal_id,
            }
            log.handle(
                log.makeRecord(
                    log.name,
                    logging.INFO,
                    __file__,
                    0,
                    "%s %s %d",
                    (method, route, status),
                    None,
                    extra={"checked_fields": fields},
                )
            )


class RequestObserver:
    """Pure ASGI middleware: every HTTP request and WebSocket observed by an
    :class:`Observer`."""

    def __init__(self, app: Any, *, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        access = self.observer.begin(scope)
        # A WebSocket is counted 101 once accepted, 403 when closed before (refused).
        status = 500
        encoded = access.request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.accept":
                status = message["status"] if kind == "http.response.start" else 101
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, encoded)]}
            elif kind == "websocket.close" and status == 500:
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.observer.end(scope, access, status, time.perf_counter() - started)
