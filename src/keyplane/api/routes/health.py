"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from keyplane import __version__
from keyplane.api.deps import RuntimeDep
from keyplane.metrics import render as render_metrics
from keyplane.services.supervisor import LoopStatus

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving; ``version`` is Keyplane's."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses={503: {"description": "the database is unreachable"}})
async def readyz(runtime: RuntimeDep, response: Response) -> dict[str, Any]:
    """Readiness: the database answers."""
    await runtime.ping()
    supervisor = runtime.supervisor
    # Loops that crashed at least once, or are not running, are listed; a healthy process
    # answers exactly {"status": "ready"}.
    loops = {
        state.name: {
            "status": state.status.value,
            "critical": state.critical,
            "restarts": state.restarts,
            "last_error": state.last_error,
        }
        for state in supervisor.states()
        if state.restarts or state.status is not LoopStatus.RUNNING
    }
    if not supervisor.healthy:
        # A critical loop is down (see Runtime._start_loops): this instance answers wrongly.
        response.status_code = 503
        return {"status": "degraded", "loops": loops}
    if loops:
        return {"status": "ready", "loops": loops}
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics (text exposition format): counts and durations, nothing secret."""
    if runtime.sampler is not None:
        runtime.sampler.sample()
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
