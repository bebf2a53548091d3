"""``keyplane signing-secrets ...``: webhook signing secrets kept sealed for your customers."""

from __future__ import annotations

import sys
from pathlib import Path
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
    usage_error,
)
from keyplane.client import SigningSecret, SigningSecretCreated

app = typer.Typer(
    help="Create, rotate and delete owners' webhook signing secrets, and sign with them.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(help="The signing secret's id (sigsec_...).")]
#: Most bytes ``sign`` reads from a file or stdin (the server takes 48 KiB).
MAX_PAYLOAD_BYTES = 48 * 1024


def _fields(record: SigningSecret) -> None:
    fields(
        [
            ("id", record.id),
            ("owner", record.owner),
            ("description", record.description),
            ("project", record.project_id),
            ("created at", record.created_at),
            ("rotated at", record.rotated_at),
            ("previous signs until", record.previous_expires_at),
        ]
    )


def _show_created(created: SigningSecretCreated, as_json: bool) -> None:
    if as_json:
        print_json(created)
        return
    if isinstance(created.data, SigningSecret):
        _fields(created.data)
    else:  # a caller without signing_secrets:read is not shown the record
        fields([("id", created.data.id)])
    show_secret(created.secret, "signing secret")


@app.command()
def create(
    owner: Annotated[str, typer.Argument(help="Whose secret: your customer's id or name.")],
    description: Annotated[str | None, typer.Option()] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Create a signing secret for an owner and print it (shown only this once)."""
    with connect(url, key, timeout) as client:
        created = client.signing_secrets.create(owner, description=description)
    _show_created(created, as_json)


@app.command("list")
def list_secrets(
    owner: Annotated[str | None, typer.Option(help="Only this owner's secrets.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """List signing secrets in creation order (never the secrets themselves)."""
    with connect(url, key, timeout) as client:
        records = []
        cursor = None
        while True:
            page = client.signing_secrets.list(owner=owner, cursor=cursor, limit=100)
            records.extend(page.data)
            if not page.has_more or page.next_cursor is None:
                break
            cursor = page.next_cursor
    if as_json:
        print_json({"data": records})
        return
    table(
        ("id", "owner", "created at", "rotated at", "previous signs until"),
        [(r.id, r.owner, r.created_at, r.rotated_at, r.previous_expires_at) for r in records],
        title=f"{len(records)} signing secret(s)",
    )


@app.command()
def show(
    secret_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show one signing secret's record."""
    with connect(url, key, timeout) as client:
        record = client.signing_secrets.get(secret_id)
    emit(record, as_json, _fields)


@app.command()
def rotate(
    secret_id: IdArgument,
    overlap: Annotated[
        int,
        typer.Option(
            min=0,
            max=30 * 86_400,
            help="Seconds the previous secret keeps signing beside the new one.",
        ),
    ] = 86_400,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Replace a secret and print the new one (shown only this once)."""
    with connect(url, key, timeout) as client:
        created = client.signing_secrets.rotate(secret_id, overlap_seconds=overlap)
    _show_created(created, as_json)


@app.command()
def delete(
    secret_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Delete a signing secret; nothing signs with it any more."""
    with connect(url, key, timeout) as client:
        record = client.signing_secrets.delete(secret_id)
    if as_json:
        print_json(record)
    else:
        typer.echo(f"{record.id}: deleted")


def _read_payload(payload: str | None, payload_file: Path | None) -> str:
    if (payload is None) == (payload_file is None):
        usage_error("give the payload as an argument or with --file (- for stdin), not both")
    if payload_file is None:
        return payload or ""
    if str(payload_file) == "-":
        raw = sys.stdin.buffer.read(MAX_PAYLOAD_BYTES + 1)
    else:
        try:
            with payload_file.open("rb") as handle:
                raw = handle.read(MAX_PAYLOAD_BYTES + 1)
        except OSError as exc:
            usage_error(f"cannot read {payload_file}: {exc.strerror}")
    if len(raw) > MAX_PAYLOAD_BYTES:
        usage_error(f"the payload is over {MAX_PAYLOAD_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        usage_error("the payload is not UTF-8 text")


@app.command()
def sign(
    secret_id: IdArgument,
    payload: Annotated[str | None, typer.Argument(help="The exact body you will send.")] = None,
    payload_file: Annotated[
        Path | None, typer.Option("--file", help="Read the payload from a file (- for stdin).")
    ] = None,
    msg_id: Annotated[str | None, typer.Option(help="The webhook-id (default: new).")] = None,
    timestamp: Annotated[int | None, typer.Option(help="Unix seconds (default: now).")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Print the Standard Webhooks headers for a payload, signed with the owner's secret."""
    body = _read_payload(payload, payload_file)
    with connect(url, key, timeout) as client:
        signature = client.signing_secrets.sign(secret_id, body, msg_id=msg_id, timestamp=timestamp)
    if as_json:
        print_json(signature)
        return
    for name, value in signature.headers.items():
        typer.echo(f"{name}: {value}")
