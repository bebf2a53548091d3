"""``keyplane keys ...``: the API key lifecycle (import and export live in keys_io.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyplane.cli import keys_io
from keyplane.cli.remote import (
    JsonOption,
    KeyOption,
    TimeoutOption,
    UrlOption,
    connect,
    emit,
    fields,
    parse_json_option,
    print_json,
    show_secret,
    table,
    usage_error,
)
from keyplane.client import Key, KeyCreated, KeyFilters
from keyplane.domain.periods import MAX_PAUSE_SECONDS, parse_duration

app = typer.Typer(help="Create, list, change and retire API keys.", no_args_is_help=True)

RefArgument = Annotated[str, typer.Argument(help="The key's id (key_...) or hash.")]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="A tag; repeat for more.")]
Scopes = Annotated[list[str] | None, typer.Option("--scope", help="A scope; repeat for more.")]
Metadata = Annotated[
    str | None, typer.Option(help="A JSON object, or @file.json.", show_default=False)
]
Policy = Annotated[str | None, typer.Option(help="Policy overrides: a JSON object, or @file.json.")]


def _pause(value: str | None) -> str | None:
    """``--for``: checked here (bounded parser) so a typo is a usage error, not a 422."""
    if value is None:
        return None
    try:
        parse_duration(value, MAX_PAUSE_SECONDS)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


LIST_COLUMNS = ("id", "name", "owner", "env", "status", "plan", "created")


def key_row(key: Key) -> list[Any]:
    return [
        key.id,
        key.name,
        key.owner,
        key.environment,
        key.status,
        key.plan,
        key.created_at.strftime("%Y-%m-%d"),
    ]


def show_key(key: Key) -> None:
    fields(
        [
            ("id", key.id),
            ("hash", key.hash),
            ("name", key.name),
            ("label", key.label),
            ("description", key.description),
            ("owner", key.owner),
            ("environment", key.environment),
            ("project", key.project_id),
            ("status", key.status),
            ("disabled reason", key.disabled_reason),
            ("auto enable at", key.auto_enable_at),
            ("revoked reason", key.revoked_reason),
            ("key", f"{key.start}...{key.end}"),
            ("tags", key.tags),
            ("scopes", key.scopes),
            ("metadata", key.metadata),
            ("plan", key.plan),
            ("policy", key.policy),
            ("expires at", key.expires_at),
            ("created at", key.created_at),
            ("last used at", key.last_used_at),
            ("usage (total credits)", key.usage.total),
            ("budget limit", key.limit),
        ]
    )


def _dict_option(name: str, text: str | None) -> dict[str, Any] | None:
    value = parse_json_option(name, text)
    if value is not None and not isinstance(value, dict):
        usage_error(f"{name} must be a JSON object")
    return value


def _issued(created: KeyCreated, as_json: bool) -> None:
    if as_json:
        print_json(created)
        return
    if isinstance(created.data, Key):
        show_key(created.data)
    else:  # a write-only management key is not shown the record
        fields([("id", created.data.id), ("status", created.data.status)])
    show_secret(created.key, "API key")
    if created.signing_secret is not None:
        show_secret(created.signing_secret, "request-signing secret (docs/signing.md)")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the key.")],
    environment: Annotated[str, typer.Option(help="live or test.")] = "live",
    project: Annotated[str | None, typer.Option(help="Project id (proj_...).")] = None,
    label: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    owner: Annotated[str | None, typer.Option(help="Your customer's id.")] = None,
    tag: Tags = None,
    scope: Scopes = None,
    metadata: Metadata = None,
    expires_at: Annotated[
        str | None, typer.Option(help="ISO 8601 UTC, e.g. 2030-01-31T00:00:00Z.")
    ] = None,
    plan: Annotated[str | None, typer.Option(help="A plan's name or id.")] = None,
    policy: Policy = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Create an API key and print its secret (shown only this once)."""
    body: dict[str, Any] = {"environment": environment}
    optional = {
        "project_id": project,
        "label": label,
        "description": description,
        "owner": owner,
        "tags": tag,
        "scopes": scope,
        "metadata": _dict_option("--metadata", metadata),
        "expires_at": expires_at,
        "plan": plan,
        "policy": _dict_option("--policy", policy),
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    with connect(url, key, timeout) as client:
        created = client.keys.create(name, **body)
    _issued(created, as_json)


@app.command("list")
def list_keys(
    owner: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    environment: Annotated[str | None, typer.Option()] = None,
    status: Annotated[
        str | None, typer.Option(help="active, disabled, expired or revoked.")
    ] = None,
    project: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option(help="Name contains.")] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="PATH=VALUE metadata filter; repeatable.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Keys per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not just one.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """List keys in creation order."""
    filters = key_filters(owner, tag, environment, status, project, name, meta)
    with connect(url, key, timeout) as client:
        if all_pages:
            keys = list(client.keys.iterate(page_size=100, **filters))
            next_cursor, has_more = None, False
        else:
            page = client.keys.list(cursor=cursor, limit=limit, **filters)
            keys, next_cursor, has_more = page.data, page.next_cursor, page.has_more
    if as_json:
        print_json({"data": keys, "next_cursor": next_cursor, "has_more": has_more})
        return
    table(LIST_COLUMNS, [key_row(k) for k in keys], title=f"{len(keys)} key(s)")
    if has_more:
        typer.echo(f"more: --cursor {next_cursor}  (or --all)", err=True)


def key_filters(
    owner: str | None,
    tag: str | None,
    environment: str | None,
    status: str | None,
    project: str | None,
    name: str | None,
    meta: list[str] | None,
) -> KeyFilters:
    filters: KeyFilters = {}
    given = {
        "owner": owner,
        "tag": tag,
        "environment": environment,
        "status": status,
        "project": project,
        "name": name,
    }
    filters.update({k: v for k, v in given.items() if v is not None})  # type: ignore[typeddict-item]
    if meta:
        pairs = {}
        for item in meta:
            path, sep, value = item.partition("=")
            if not sep or not path:
                usage_error(f"--meta takes PATH=VALUE, got {item!r}")
            pairs[path] = value
        filters["metadata"] = pairs
    return filters


@app.command()
def show(
    ref: RefArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show one key."""
    with connect(url, key, timeout) as client:
        found = client.keys.get(ref)
    emit(found, as_json, show_key)


@app.command()
def update(
    ref: RefArgument,
    name: Annotated[str | None, typer.Option()] = None,
    label: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    owner: Annotated[str | None, typer.Option()] = None,
    tag: Tags = None,
    scope: Scopes = None,
    metadata: Metadata = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 UTC.")] = None,
    plan: Annotated[str | None, typer.Option(help="A plan's name or id.")] = None,
    no_plan: Annotated[bool, typer.Option("--no-plan", help="Take the key off its plan.")] = False,
    policy: Policy = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Change a key's fields; options not given stay as they are."""
    if plan is not None and no_plan:
        usage_error("--plan and --no-plan exclude each other")
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "name": name,
            "label": label,
            "description": description,
            "owner": owner,
            "tags": tag,
            "scopes": scope,
            "metadata": _dict_option("--metadata", metadata),
            "expires_at": expires_at,
            "plan": plan,
            "policy": _dict_option("--policy", policy),
        }.items()
        if v is not None
    }
    if no_plan:
        changes["plan"] = None
    if not changes:
        usage_error("nothing to change: give at least one option")
    with connect(url, key, timeout) as client:
        updated = client.keys.update(ref, **changes)
    emit(updated, as_json, show_key)


@app.command()
def rotate(
    ref: RefArgument,
    grace: Annotated[
        int, typer.Option(min=0, max=30 * 86400, help="Seconds the old secret keeps working.")
    ] = 0,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Issue a new secret for the key (same id) and print it (shown only this once)."""
    with connect(url, key, timeout) as client:
        rotated = client.keys.rotate(ref, grace_period_seconds=grace)
    _issued(rotated, as_json)


@app.command()
def disable(
    ref: RefArgument,
    reason: Annotated[str | None, typer.Option()] = None,
    for_duration: Annotated[
        str | None,
        typer.Option(
            "--for",
            callback=_pause,
            help='Enable again after this long: seconds, or "30m", "1h", "2d" (at most 365d).',
        ),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Disable a key (optionally for a while)."""
    with connect(url, key, timeout) as client:
        changed = client.keys.disable(ref, reason=reason, auto_enable_after=for_duration)
    _changed(changed, as_json)


@app.command()
def enable(
    ref: RefArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Enable a disabled key."""
    with connect(url, key, timeout) as client:
        changed = client.keys.enable(ref)
    _changed(changed, as_json)


@app.command()
def approve(
    ref: RefArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Approve a key pending approval (scope keys:approve; not with the key that created it)."""
    with connect(url, key, timeout) as client:
        changed = client.keys.approve(ref)
    _changed(changed, as_json)


@app.command()
def reject(
    ref: RefArgument,
    reason: Annotated[str | None, typer.Option()] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Reject a key pending approval: it is revoked for good."""
    with connect(url, key, timeout) as client:
        changed = client.keys.reject(ref, reason=reason)
    _changed(changed, as_json)


@app.command()
def revoke(
    ref: RefArgument,
    reason: Annotated[str | None, typer.Option()] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Revoke a key for good (the record stays for audit)."""
    with connect(url, key, timeout) as client:
        changed = client.keys.revoke(ref, reason=reason)
    _changed(changed, as_json)


@app.command("reset-limits")
def reset_limits(
    ref: RefArgument,
    windows: Annotated[
        list[str] | None,
        typer.Option("--window", help="Only this rate/token window; repeat for more."),
    ] = None,
    concurrency: Annotated[
        bool, typer.Option("--concurrency/--no-concurrency", help="Free concurrency slots.")
    ] = True,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Make a key's rate windows full again and free its concurrency slots (audited)."""
    with connect(url, key, timeout) as client:
        done = client.keys.reset_limits(ref, windows=windows or None, concurrency=concurrency)
    if as_json:
        print_json(done)
        return
    typer.echo(
        f"{done.key_id}: reset {', '.join(done.windows) or 'no windows'}"
        + (f"; {done.slots_released} slot(s) freed" if done.concurrency else "")
    )


@app.command()
def credits(
    ref: RefArgument,
    amount: Annotated[
        str,
        typer.Option(
            "--amount", help="Credits to add, exact: 25; negative takes them: --amount -2.5."
        ),
    ],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
    idempotency_key: Annotated[
        str | None, typer.Option(help="Count a retried command once.", show_default=False)
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Grant or charge credits to a key's budget, as a ledger entry (audited)."""
    with connect(url, key, timeout) as client:
        adjusted = client.keys.adjust_credits(
            ref, amount, reason=reason, idempotency_key=idempotency_key
        )
    if as_json:
        print_json(adjusted)
        return
    typer.echo(f"{adjusted.key_id}: {adjusted.amount:+} credits ({adjusted.id})")


def _changed(changed: Key, as_json: bool) -> None:
    if as_json:
        print_json(changed)
    else:
        typer.echo(f"{changed.id}: {changed.status}")


app.command("import")(keys_io.import_keys)
app.command("export")(keys_io.export_keys)
