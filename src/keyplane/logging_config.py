"""Structured JSON logs with key material redacted."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from keyplane.domain.keyformat import BODY_LENGTH, CHECKSUM_LENGTH, SCAN_PATTERN

_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
# SCAN_PATTERN will not match a key glued to the text before it (``key%3Dkp_live_...``,
# ``Bearer%20kp_live_...``); for redaction, mask any kind-and-secret run as well.
_GLUED_KEY = re.compile(rf"(_(?:live|test|mgmt)_)[0-9A-Za-z]{{{BODY_LENGTH + CHECKSUM_LENGTH}}}")
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}


def redact(text: str) -> str:
    """Mask anything shaped like a Keyplane key or a bearer token."""
    text = SCAN_PATTERN.sub(lambda m: m.group(0)[:12] + "[REDACTED]", text)
    text = _GLUED_KEY.sub(r"\1[REDACTED]", text)
    return _BEARER.sub(r"\1[REDACTED]", text)


def _redact_value(value: Any) -> Any:
    """``value`` with every string in it redacted, containers included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    return value


def _redacted_str(value: object) -> str:
    """JSON fallback for objects json cannot encode: their ``str``, redacted."""
    return redact(str(value))


#: The last whole second :func:`iso_utc` formatted, and its text.
_SECOND: tuple[int, str] = (0, "1970-01-01T00:00:00")


def iso_utc(created: float) -> str:
    """``datetime.fromtimestamp(created, UTC).isoformat()``, the date and time formatted once
    per second rather than on every line."""
    global _SECOND
    whole = math.floor(created)
    micro = round((created - whole) * 1e6)  # half to even, as datetime rounds
    if micro >= 1_000_000:
        whole += 1
        micro -= 1_000_000
    second, text = _SECOND
    if second != whole:
        text = datetime.fromtimestamp(whole, UTC).isoformat()[:19]
        _SECOND = (whole, text)
    if micro:
        return f"{text}.{micro:06d}+00:00"
    return text + "+00:00"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "checked_fields", None)
        if isinstance(fields, dict):
            # An access log line (api/observe.py): every value is a number, an id, a route
            # template or an already redacted request id; redacting it all again per request
            # would cost more than serving a verify.
            return json.dumps(
                {
                    "ts": iso_utc(record.created),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "msg": record.getMessage(),
                    **fields,
                }
            )
        entry: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRS and not name.startswith("_"):
                entry[name] = _redact_value(value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=_redacted_str)


class LoopBatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that can also take finished lines (``put``: the access log's, one per
    request) and write those an event loop puts together, once per turn of the loop.

    Written one by one, each line is a system call (and, on a pipe, a wakeup of the reader),
    which costs a busy server more CPU than answering a healthz. A line put on an event loop's
    thread is kept until the end of the loop's current turn, then written with the others of
    that turn: nothing waits longer than the requests being handled in that turn. Records
    (``emit``: every other line, startup and shutdown included) are written at once, after any
    kept lines, so the order is kept; so is a line put off the loop's thread; ``flush`` (called
    at exit) writes what is kept.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        #: Lines, or how to render them (``put_later``), in order.
        self._kept: list[str | tuple[Callable[..., str], tuple[Any, ...]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            self.acquire()
            try:
                self._kept.append(line)
                self._write_kept()
            finally:
                self.release()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def put(self, line: str) -> None:
        """Write a finished INFO line (``\\n`` included): kept until the end of the loop's
        turn when put on an event loop's thread, else at once."""
        self._keep(line)

    def put_later(self, render: Callable[..., str], *args: Any) -> None:
        """``put(render(*args))``, the line rendered only when it is written: with the other
        lines of the loop's turn, one after the other, rather than in the middle of answering
        a request. The same work costs a server less that way (the access log: healthz went
        from 41 to 36 µs of server CPU per request, bench/README.md)."""
        self._keep((render, args))

    def _keep(self, line: str | tuple[Callable[..., str], tuple[Any, ...]]) -> None:
        # Once per request: the loop looked up and the lock taken here, without a helper
        # and Handler.acquire/release (a call each).
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._kept.append(line)
            if loop is None:
                self._write_kept()
            elif len(self._kept) == 1:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_kept()
        finally:
            self.release()

    def _write_kept(self) -> None:
        if self._kept:
            text = "".join([_rendered(line) for line in self._kept])
            self._kept.clear()
            self.stream.write(text)
        super().flush()


def _rendered(line: str | tuple[Callable[..., str], tuple[Any, ...]]) -> str:
    if isinstance(line, str):
        return line
    render, args = line
    return render(*args)


def line_writer(logger: logging.Logger) -> LoopBatchedStreamHandler | None:
    """Where a line ``logger`` logs at INFO, formatted by :class:`JsonFormatter`, can be put
    directly (``put``), skipping the record: when the one handler it reaches is a
    :class:`LoopBatchedStreamHandler` with that formatter, and no filter is on the way (the
    configuration ``keyplane serve`` runs). ``None`` for anything else: log the record."""
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not LoopBatchedStreamHandler
                or type(handler.formatter) is not JsonFormatter
                or handler.filters
                or handler.level > logging.INFO
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def logging_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping for Keyplane and uvicorn."""
    handler = {
        "class": "keyplane.logging_config.LoopBatchedStreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "loggers": {
            "keyplane": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        },
    }


def configure(level: str = "info") -> None:
    logging.config.dictConfig(logging_config(level))
