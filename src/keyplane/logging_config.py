"""Structured JSON logs with key material redacted."""

from __future__ import annotations

import json
import logging
import logging.config
import re
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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "checked_fields", None)
        if isinstance(fields, dict):
            # An access log line (api/observe.py): every value is a number, an id, a route
            # template or an already redacted request id; redacting it all again per request
            # would cost more than serving a verify.
            return json.dumps(
                {
                    "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "msg": record.getMessage(),
                    **fields,
                }
            )
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
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


def logging_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping for Keyplane and uvicorn."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
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
