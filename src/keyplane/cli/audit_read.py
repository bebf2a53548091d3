"""``keyplane audit list|show|export``: reading the audit log (docs/audit.md).

These commands join the ``audit`` group of ``cli/audit.py`` (which has ``verify``) through
:func:`register`.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn, TransferSpeedColumn

from keyplane.cli.remote import (
    JsonOption,
    KeyOption,
    TimeoutOption,
    UrlOption,
    connect,
    err,
    fields,
    print_json,
    table,
    usage_error,
)
from keyplane.client import AuditEntry, AuditFilters


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"
    parquet = "parquet"


KeyIdOption = Annotated[
    list[str] | None,
    typer.Option("--key-id", help="Entries about this object (any id; repeatable)."),
]
ActorOption = Annotated[
    list[str] | None,
    typer.Option("--actor", help="Made by this management key id, system or root (repeatable)."),
]
ActionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--action", "--event-type", help="An action, or a prefix such as key.* (repeatable)."
    ),
]
OutcomeOption = Annotated[
    list[str] | None,
    typer.Option("--outcome", help="success, failure or denied (repeatable)."),
]
StartOption = Annotated[
    str | None, typer.Option("--start", help="From this ISO 8601 time or date (inclusive).")
]
EndOption = Annotated[
    str | None,
    typer.Option("--end", help="Up to this time (exclusive), or through this date."),
]


def _filters(
    key_id: list[str] | None,
    actor: list[str] | None,
    action: list[str] | None,
    outcome: list[str] | None,
    start: str | None,
    end: str | None,
) -> AuditFilters:
    filters: AuditFilters = {}
    if key_id:
        filters["key_id"] = key_id
    if actor:
        filters["actor"] = actor
    if action:
        filters["event_types"] = action
    if outcome:
        filters["outcome"] = outcome
    if start is not None:
        filters["start"] = start
    if end is not None:
        filters["end"] = end
    return filters


def _row(entry: AuditEntry) -> tuple[Any, ...]:
    actor = entry.actor.name or entry.actor.id or entry.actor.type
    target = f"{entry.target.type} {entry.target.id or ''}".strip()
    count = entry.count if entry.count != 1 else None
    return (entry.id, entry.occurred_at, entry.action, actor, target, entry.outcome, count)


def list_entries(
    key_id: KeyIdOption = None,
    actor: ActorOption = None,
    action: ActionOption = None,
    outcome: OutcomeOption = None,
    start: StartOption = None,
    end: EndOption = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="How many entries to show.")
    ] = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """List audit log entries, newest first (needs audit:read)."""
    filters = _filters(key_id, actor, action, outcome, start, end)
    entries: list[AuditEntry] = []
    with connect(url, key, timeout) as client:
        for entry in client.audit.iterate(page_size=min(limit, 200), **filters):
            entries.append(entry)
            if len(entries) >= limit:
                break
    if as_json:
        print_json({"data": entries})
        return
    table(
        ("id", "time", "action", "actor", "target", "outcome", "count"),
        [_row(entry) for entry in entries],
        title=f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, newest first",
    )


def show(
    entry_id: Annotated[str, typer.Argument(help="The entry's id (aud_...).")],
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show one audit log entry."""
    with connect(url, key, timeout) as client:
        entry = client.audit.get(entry_id)
    if as_json:
        print_json(entry)
        return
    fields(
        [
            ("id", entry.id),
            ("seq", entry.seq),
            ("time", entry.occurred_at),
            ("action", entry.action),
            ("outcome", entry.outcome),
            ("count", entry.count),
            ("actor", f"{entry.actor.type} {entry.actor.id or ''} {entry.actor.name or ''}"),
            ("from", entry.actor.ip),
            ("user agent", entry.actor.user_agent),
            ("request id", entry.request_id),
            ("target", f"{entry.target.type} {entry.target.id or ''}"),
            ("project", entry.project_id),
            ("details", entry.details),
            ("hash", entry.hash),
        ]
    )


def export(
    output: Annotated[
        str, typer.Option("--output", "-o", help="The file to write, or - for stdout.")
    ],
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.csv,
    period: Annotated[
        str | None,
        typer.Option(
            "--period", help="A preset instead of --start/--end: last_7_days, last_quarter..."
        ),
    ] = None,
    include_pii: Annotated[
        bool,
        typer.Option(
            "--include-pii", help="Keep IP addresses and user agents (masked by default)."
        ),
    ] = False,
    key_id: KeyIdOption = None,
    actor: ActorOption = None,
    action: ActionOption = None,
    outcome: OutcomeOption = None,
    start: StartOption = None,
    end: EndOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Export the audit log (CSV, NDJSON or Parquet), oldest entry first, streamed to a file.

    A progress bar shows on a terminal only.
    """
    if output != "-" and Path(output).is_dir():
        usage_error(f"--output {output} is a directory")
    filters = _filters(key_id, actor, action, outcome, start, end)
    destination: str | IO[bytes] = sys.stdout.buffer if output == "-" else output
    with connect(url, key, timeout) as client:
        if not err.is_terminal:
            written = client.audit.export(
                format.value, to=destination, period=period, include_pii=include_pii, **filters
            )
        else:
            with Progress(
                SpinnerColumn(),
                TextColumn("exporting"),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=err,
                transient=True,
            ) as progress:
                task = progress.add_task("export", total=None)
                written = client.audit.export(
                    format.value,
                    to=destination,
                    period=period,
                    include_pii=include_pii,
                    on_progress=lambda done: progress.update(task, completed=done),
                    **filters,
                )
    if output != "-":
        err.print(f"wrote {written} bytes to {escape(output)}")


def register(app: typer.Typer) -> None:
    """Add ``list``, ``show`` and ``export`` to the ``audit`` group."""
    app.command("list")(list_entries)
    app.command("show")(show)
    app.command("export")(export)
