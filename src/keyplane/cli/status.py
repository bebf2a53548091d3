"""``keyplane health`` and ``keyplane usage KEY``: what a server and a key are doing."""

from __future__ import annotations

from typing import Annotated

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


def usage(
    ref: Annotated[str, typer.Argument(help="The key's id (key_...) or hash.")],
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show a key's spend (credits) in the current periods and its budget."""
    with connect(url, key, timeout) as client:
        found = client.keys.get(ref)
    report = {
        "key_id": found.id,
        "name": found.name,
        "usage": found.usage,
        "limit": found.limit,
        "limit_remaining": found.limit_remaining,
        "limit_reset": found.limit_reset,
        "last_used_at": found.last_used_at,
    }
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
