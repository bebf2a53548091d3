"""``keyplane health`` and ``keyplane usage KEY``: what a server and a key are doing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from keyplane.cli.remote import (
    Exit,
    JsonOption,
    KeyOption,
    TimeoutOption,
    UrlOption,
    connect,
    fields,
    print_json,
    table,
)
from keyplane.client import ServerError


def health(
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Check that the server is up (/healthz) and ready (/readyz); exit 3 if not."""
    with connect(url, key, timeout) as client:
        live = client.health().status
        try:
            ready = client.ready().status
        except ServerError as exc:
            ready = f"not ready ({exc.code}: {exc.detail})"
        address = client.url
    if as_json:
        print_json({"url": address, "health": live, "ready": ready})
    else:
        fields([("url", address), ("health", live), ("ready", ready)])
    if ready != "ready":
        raise typer.Exit(int(Exit.UNREACHABLE))


#: Eight heights of a terminal sparkline, lowest first.
SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int]) -> str:
    """One character per value, scaled to the largest (all lowest when all are zero)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(
        SPARKS[min(len(SPARKS) - 1, value * len(SPARKS) // (top + 1))] for value in values
    )


def usage(
    ref: Annotated[str, typer.Argument(help="The key's id (key_...) or hash.")],
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
    period: Annotated[
        str | None,
        typer.Option(
            "--period", help="Also show analytics over this period (30m, 24h, 7d; usage:read)."
        ),
    ] = None,
    granularity: Annotated[
        str, typer.Option("--granularity", help="minute, hour or day (with --period).")
    ] = "hour",
) -> None:
    """Show a key's spend (credits) in the current periods and its budget; with ``--period``,
    its analytics: totals, models, features and a sparkline of requests."""
    with connect(url, key, timeout) as client:
        found = client.keys.get(ref)
        analytics = (
            None
            if period is None
            else client.usage.key_analytics(found.id, period=period, granularity=granularity)
        )
    report = {
        "key_id": found.id,
        "name": found.name,
        "usage": found.usage,
        "limit": found.limit,
        "limit_remaining": found.limit_remaining,
        "limit_reset": found.limit_reset,
        "last_used_at": found.last_used_at,
    }
    if analytics is not None:
        report["analytics"] = analytics
    if as_json:
        print_json(report)
        return
    fields(
        [
            ("key", f"{found.id} ({found.name})"),
            ("total", found.usage.total),
            ("today", found.usage.daily),
            ("this week", found.usage.weekly),
            ("this month", found.usage.monthly),
            ("budget limit", "none" if found.limit is None else found.limit),
            ("budget remaining", found.limit_remaining),
            ("budget resets", found.limit_reset),
            ("last used at", found.last_used_at),
        ],
        title="usage (credits)",
    )
    if analytics is not None:
        _show_analytics(analytics)


def _show_analytics(analytics: dict[str, Any]) -> None:
    latency = analytics["latency"]
    fields(
        [
            ("period", f"{analytics['period']} by {analytics['granularity']}"),
            ("from", analytics["start"]),
            ("to", analytics["end"]),
            ("requests", analytics["total_requests"]),
            ("cost (credits)", analytics["total_cost"]),
            ("error rate (%)", analytics["error_rate"]),
            ("avg latency (ms)", analytics["avg_latency_ms"]),
            ("p50 / p95 / p99 (ms)", f"{latency['p50']} / {latency['p95']} / {latency['p99']}"),
            ("verifications", analytics["verifications"] or "none"),
            ("requests", sparkline([point["requests"] for point in analytics["series"]])),
        ],
        title="analytics",
    )
    for name, rows in (("model", analytics["models"]), ("feature", analytics["features"])):
        if rows:
            table(
                [name, "requests", "cost", "errors", "avg latency (ms)"],
                [
                    [
                        row["name"],
                        row["requests"],
                        row["cost"],
                        row["errors"],
                        row["avg_latency_ms"],
                    ]
                    for row in rows
                ],
                title=f"by {name}",
            )
