"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from keyplane import __version__
from keyplane.api.deps import RuntimeDep
from keyplane.services.runtime import Runtime
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


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(runtime: RuntimeDep) -> PlainTextResponse:
    """Prometheus metrics (text format 0.0.4): counts only, nothing secret."""
    return PlainTextResponse(
        render_metrics(runtime), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def render_metrics(runtime: Runtime) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    metric(
        "keyplane_verify_total",
        "counter",
        "Verdicts given, by code.",
        [
            (f'{{code="{code}"}}', n)
            for code, n in sorted(runtime.services.verifier.verdicts.items())
        ],
    )
    cache = runtime.directory.hashes
    metric("keyplane_key_cache_hits_total", "counter", "Key cache hits.", [("", cache.hits)])
    metric("keyplane_key_cache_misses_total", "counter", "Key cache misses.", [("", cache.misses)])
    metric(
        "keyplane_usage_reports_total",
        "counter",
        "Usage reports written to the ledger.",
        [("", runtime.ledger.reports)],
    )
    metric(
        "keyplane_usage_transactions_total",
        "counter",
        "Ledger transactions (group commits).",
        [("", runtime.ledger.batches)],
    )
    limiter = runtime.resilient_limiter
    if limiter is not None:
        metric(
            "keyplane_limits_degraded",
            "gauge",
            "1 while Redis is unreachable and limits run on the fallback.",
            [("", 1 if limiter.degraded else 0)],
        )
        metric(
            "keyplane_limits_fallback_total",
            "counter",
            "Admissions decided without Redis.",
            [("", limiter.fallbacks)],
        )
        metric(
            "keyplane_limits_state_lost_total",
            "counter",
            "API keys whose long windows and slots Redis was found to have lost.",
            [("", limiter.state_losses)],
        )
    if runtime.invalidation is not None:
        metric(
            "keyplane_cache_evictions_received_total",
            "counter",
            "Cache evictions received from the invalidation channel.",
            [("", runtime.invalidation.received)],
        )
    states = runtime.supervisor.states()
    metric(
        "keyplane_background_loop_up",
        "gauge",
        "1 while a background loop runs, 0 while it waits to be restarted or has stopped.",
        [(f'{{loop="{s.name}"}}', 1 if s.status is LoopStatus.RUNNING else 0) for s in states],
    )
    metric(
        "keyplane_background_loop_restarts_total",
        "counter",
        "Times a background loop crashed and was restarted.",
        [(f'{{loop="{s.name}"}}', s.restarts) for s in states],
    )
    return "\n".join(lines) + "\n"
