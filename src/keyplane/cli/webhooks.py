"""``keyplane webhooks ...``: endpoints told about events, and their delivery log."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyplane.cli.remote import (
    JsonOption,
    KeyOption,
    TimeoutOption,
    UrlOption,
    connect,
    emit,
    fields,
    print_json,
    show_secret,
    table,
    usage_error,
)
from keyplane.client import Webhook

app = typer.Typer(
    help="Register webhook and email endpoints, rotate their secrets, read deliveries.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(help="The endpoint's id (whe_...).")]
EventsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--event",
        "-e",
        help="An event type or prefix (key.*, budget.threshold_crossed, *); repeat it.",
    ),
]


def _fields(hook: Webhook) -> None:
    fields(
        [
            ("id", hook.id),
            ("kind", hook.kind),
            ("url", hook.url),
            ("events", ", ".join(hook.events)),
            ("description", hook.description),
            ("enabled", hook.enabled),
            ("project", hook.project),
            ("disabled reason", hook.disabled_reason),
            ("failing since", hook.failing_since),
            ("old secret signs until", hook.previous_secret_valid_until),
            ("created at", hook.created_at),
        ]
    )


def _show_with_secret(hook: Webhook, as_json: bool) -> None:
    if as_json:
        print_json(hook)
        return
    _fields(hook)
    if hook.secret is not None:
        show_secret(hook.secret, "signing secret")


@app.command()
def create(
    target: Annotated[str, typer.Argument(help="https URL, or an email address with --email.")],
    events: EventsOption = None,
    email: Annotated[bool, typer.Option("--email", help="An email channel.")] = False,
    description: Annotated[str | None, typer.Option()] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's events.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Register an endpoint and print its signing secret (shown only this once)."""
    if not events:
        usage_error("give at least one --event (for example --event 'key.*')")
    with connect(url, key, timeout) as client:
        hook = client.webhooks.create(
            target,
            list(events),
            kind="email" if email else "webhook",
            description=description,
            enabled=not disabled,
            project=project,
        )
    _show_with_secret(hook, as_json)


@app.command("list")
def list_hooks(
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """List endpoints (never their secrets)."""
    with connect(url, key, timeout) as client:
        hooks = client.webhooks.list().data
    if as_json:
        print_json({"data": hooks})
        return
    table(
        ("id", "kind", "url", "events", "enabled"),
        [(h.id, h.kind, h.url, ", ".join(h.events), h.enabled) for h in hooks],
        title=f"{len(hooks)} endpoint(s)",
    )


@app.command()
def show(
    endpoint_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show one endpoint."""
    with connect(url, key, timeout) as client:
        hook = client.webhooks.get(endpoint_id)
    emit(hook, as_json, _fields)


@app.command()
def update(
    endpoint_id: IdArgument,
    target: Annotated[str | None, typer.Option("--target", help="A new URL or address.")] = None,
    events: EventsOption = None,
    description: Annotated[str | None, typer.Option()] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Change an endpoint's target, events, description or enabled state."""
    changes: dict[str, Any] = {}
    if target is not None:
        changes["url"] = target
    if events:
        changes["events"] = list(events)
    if description is not None:
        changes["description"] = description
    if enabled is not None:
        changes["enabled"] = enabled
    if not changes:
        usage_error("nothing to change")
    with connect(url, key, timeout) as client:
        hook = client.webhooks.update(endpoint_id, **changes)
    emit(hook, as_json, _fields)


@app.command()
def delete(
    endpoint_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Delete an endpoint and its delivery log."""
    with connect(url, key, timeout) as client:
        hook = client.webhooks.delete(endpoint_id)
    emit(hook, as_json, _fields)


@app.command("rotate-secret")
def rotate_secret(
    endpoint_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """A new signing secret (shown only this once); the old one signs too for a while."""
    with connect(url, key, timeout) as client:
        hook = client.webhooks.rotate_secret(endpoint_id)
    _show_with_secret(hook, as_json)


@app.command()
def deliveries(
    endpoint_id: IdArgument,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """The endpoint's latest deliveries, newest first."""
    with connect(url, key, timeout) as client:
        found = client.webhooks.deliveries(endpoint_id, limit=limit).data
    if as_json:
        print_json({"data": found})
        return
    table(
        ("id", "event", "status", "attempts", "last status", "last error", "next attempt"),
        [
            (
                d.id,
                d.event_type,
                d.status,
                d.attempts,
                d.last_status_code,
                d.last_error,
                d.next_attempt_at,
            )
            for d in found
        ],
        title=f"{len(found)} deliveries",
    )


@app.command()
def replay(
    endpoint_id: IdArgument,
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id (whd_...).")],
    url: UrlOption = None,
    key: KeyOption = None,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Send a delivery again (same webhook-id)."""
    with connect(url, key, timeout) as client:
        done = client.webhooks.replay(endpoint_id, delivery_id)
    fields([("queued", done.id)])


@app.command()
def test(
    endpoint_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Queue a ping to the endpoint."""
    with connect(url, key, timeout) as client:
        done = client.webhooks.test(endpoint_id)
    fields([("queued", done.id)])
