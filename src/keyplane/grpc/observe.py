"""Every gRPC call observed once: a latency histogram by method and status code, and an access
log line on ``keyplane.access`` (as ``api/observe.py`` writes for HTTP; never a message body,
which may hold a key)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from keyplane.metrics import GRPC_REQUESTS

log = logging.getLogger("keyplane.access")


@asynccontextmanager
async def observed(method: str, context: Any, access_log: bool) -> AsyncIterator[None]:
    """Time the call in the block and record how it ended (``context.code()``, OK if unset)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        code = context.code()
        name = "OK" if code is None else getattr(code, "name", str(code))
        GRPC_REQUESTS.labels(method, name).observe(elapsed)
        if access_log and log.isEnabledFor(logging.INFO):
            log.info(
                "gRPC %s %s",
                method,
                name,
                extra={
                    "method": "gRPC",
                    "route": method,
                    "status": name,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )
