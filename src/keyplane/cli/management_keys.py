"""``keyplane management-keys ...``: the keys that drive the management API."""

from __future__ import annotations

from typing import Annotated

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
)
from keyplane.client import ManagementKey

app = typer.Typer(help="Create, list and revoke management keys.", no_args_is_help=True)

IdArgument = Annotated[str, typer.Argument(help="The management key's id (mk_...).")]


def _fields(key: ManagementKey) -> None:
    fields(
        [
            ("id", key.id),
            ("name", key.name),
            ("key", f"{key.start}...{key.end}"),
            ("scopes", key.scopes),
            ("project", key.project_id),
            ("created by", key.created_by),
            ("created at", key.created_at),
            ("revoked at", key.revoked_at),
            ("last used at", key.last_used_at),
        ]
    )


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the key.")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="A scope, e.g. keys:read; repeat for more.")
    ],
    project: Annotated[str | None, typer.Option(help="Bind the key to a project.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Create a management key and print its secret (shown only this once)."""
    with connect(url, key, timeout) as client:
        created = client.management_keys.create(name, scope, project_id=project)
    if as_json:
        print_json(created)
        return
    if isinstance(created.data, ManagementKey):
        _fields(created.data)
    else:  # a caller without management_keys:read is not shown the record
        fields([("id", created.data.id), ("status", created.data.status)])
    show_secret(created.key, "management key")


@app.command("list")
def list_management_keys(
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """List every management key in creation order."""
    with connect(url, key, timeout) as client:
        keys = list(client.management_keys.iterate())
    if as_json:
        print_json({"data": keys})
        return
    table(
        ("id", "name", "scopes", "project", "key", "revoked"),
        [
            (k.id, k.name, k.scopes, k.project_id, f"{k.start}...{k.end}", k.revoked_at)
            for k in keys
        ],
        title=f"{len(keys)} management key(s)",
    )


@app.command()
def show(
    key_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show one management key."""
    with connect(url, key, timeout) as client:
        found = client.management_keys.get(key_id)
    emit(found, as_json, _fields)


@app.command()
def revoke(
    key_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Revoke a management key; it stops working at once."""
    with connect(url, key, timeout) as client:
        revoked = client.management_keys.revoke(key_id)
    if as_json:
        print_json(revoked)
    else:
        typer.echo(f"{revoked.id}: revoked")
