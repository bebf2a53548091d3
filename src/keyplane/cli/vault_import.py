"""``keyplane vault import``: many credentials from a CSV or JSON lines file, through the SDK.

Idempotent on re-run by alias: before sending, the command lists the server's credentials and
skips each row whose alias already names a live (not revoked) credential of the same provider;
it counts as "already existed". Two rows with the same provider and alias in one file are one
credential. A changed secret for an existing alias is therefore *not* applied: use
``keyplane vault update --new-secret`` for that.

Rows go in all-or-nothing batches of up to 100 (one request each); when a batch is refused,
its rows are sent one by one so that each bad row is reported with its line number and the
good ones still get in. A reason never quotes a row's values: a row holds a secret.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from keyplane.cli.remote import (
    Exit,
    KeyOption,
    TimeoutOption,
    UrlOption,
    connect,
    err,
    table,
    usage_error,
)
from keyplane.client import APIError, Client

FIELDS = (
    "provider",
    "alias",
    "secret",
    "environment",
    "tags",
    "metadata",
    "weight",
    "daily_limit",
    "monthly_limit",
    "max_concurrent",
    "project_id",
    "shared_with_projects",
)
TEXT_FIELDS = ("provider", "alias", "secret", "environment", "project_id")
NUMBER_FIELDS = ("weight", "daily_limit", "monthly_limit", "max_concurrent")
#: Columns a ``vault list --json`` item has besides the fields: ignored, never an error.
IGNORED = ("id", "secret_hint", "status", "created_at", "updated_at")
BATCH = 100
MAX_ROWS = 100_000
MAX_FILE_BYTES = 64 * 2**20
_UNLIMITED = {"none", "null", "unlimited"}


class Format(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class RowError(ValueError):
    """A row that cannot be sent; the reason never holds the row's values."""


@dataclass
class Row:
    line: int
    fields: dict[str, Any]

    @property
    def name(self) -> tuple[str, str]:
        """(provider, alias), as the server compares them."""
        return str(self.fields["provider"]).strip().lower(), str(self.fields["alias"])


@dataclass
class Tally:
    created: int = 0
    existed: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _number(name: str, value: Any, from_csv: bool) -> int | None:
    if from_csv:
        text = str(value).strip()
        if text.lower() in _UNLIMITED:
            return None
        try:
            return int(text)
        except ValueError:
            raise RowError(f"{name} must be a whole number or 'none'") from None
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise RowError(f"{name} must be a whole number or null")


def _normalise(raw: dict[str, Any], from_csv: bool) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(FIELDS) - set(IGNORED))
    if unknown:
        raise RowError(f"unknown field(s): {', '.join(unknown)[:200]}")
    row: dict[str, Any] = {}
    for name in FIELDS:
        if name not in raw or (from_csv and raw[name] in ("", None)):
            continue
        value = raw[name]
        if name in TEXT_FIELDS:
            if not isinstance(value, str):
                raise RowError(f"{name} must be a string")
        elif name == "tags":
            if from_csv:
                value = (
                    _json(name, value)
                    if value.lstrip().startswith("[")
                    else [t.strip() for t in value.split(";") if t.strip()]
                )
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise RowError("tags must be a list of strings")
        elif name == "metadata":
            value = _json(name, value) if from_csv else value
            if not isinstance(value, dict):
                raise RowError("metadata must be a JSON object")
        elif name == "shared_with_projects":
            value = _flag(name, value, from_csv)
        else:
            value = _number(name, value, from_csv)
            if name == "weight" and value is None:
                raise RowError("weight must be a whole number")
        row[name] = value
    for name in ("provider", "alias", "secret"):
        if not row.get(name):
            raise RowError(f"{name} is required")
    return row


def _flag(name: str, value: Any, from_csv: bool) -> bool:
    if from_csv and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, bool) and not from_csv:
        return value
    raise RowError(f"{name} must be true or false")


def _json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise RowError(f"{name} is not valid JSON") from None


def read_rows(handle: IO[str], fmt: Format) -> Iterator[Row | tuple[int, str]]:
    """Rows to send, or (line, reason) for rows that cannot be sent."""
    if fmt is Format.csv:
        reader = csv.DictReader(handle)
        names = reader.fieldnames or []
        if not {"provider", "alias", "secret"} <= set(names):
            raise RowError("the CSV header must name the columns, with provider, alias, secret")
        for raw in reader:
            if None in raw:
                yield reader.line_num, "more cells than header columns"
                continue
            try:
                yield Row(reader.line_num, _normalise(dict(raw), from_csv=True))
            except RowError as exc:
                yield reader.line_num, str(exc)
        return
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            yield line, "not valid JSON"  # not the parser's excerpt: the line may hold a secret
            continue
        if not isinstance(raw, dict):
            yield line, "each line must be a JSON object"
            continue
        try:
            yield Row(line, _normalise(raw, from_csv=False))
        except RowError as exc:
            yield line, str(exc)


def _existing(client: Client) -> set[tuple[str, str]]:
    return {
        (c.provider, c.alias) for c in client.vault.iterate(page_size=100) if c.status != "revoked"
    }


def _send(client: Client, batch: list[Row], tally: Tally) -> None:
    """One batch in one request; when it is refused, row by row to find the bad ones."""
    try:
        if len(batch) == 1:
            client.vault.create(**batch[0].fields)
            tally.created += 1
        else:
            tally.created += len(client.vault.create_many([row.fields for row in batch]))
    except APIError as exc:
        if exc.status in (401, 403) or exc.status >= 500:
            raise  # the same for every row: stop here, connect() reports it
        if len(batch) == 1:
            tally.rejected.append((batch[0].line, f"{exc.code}: {exc.detail}"))
            return
        for row in batch:
            _send(client, [row], tally)


def _read(file: Path) -> str:
    """The file's text; ``-`` is standard input (secrets piped from a password manager)."""
    try:
        if str(file) == "-":
            raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with file.open("rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            usage_error(f"{file}: larger than {MAX_FILE_BYTES // 2**20} MiB; split it")
        # utf-8-sig: a byte order mark (as spreadsheet programs write) is not part of a name.
        return raw.decode("utf-8-sig")
    except OSError as exc:
        usage_error(f"cannot read {file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        usage_error(f"cannot read {file}: not UTF-8 text")


def import_credentials(
    file: Annotated[
        Path, typer.Argument(help="CSV (with a header) or JSON lines; '-' reads stdin.")
    ],
    fmt: Annotated[
        Format | None, typer.Option("--format", help="Default: from the file's extension.")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Add the credentials of a file, once: rows whose alias exists (per provider) are skipped."""
    text = _read(file)
    chosen = fmt or (Format.csv if file.suffix.lower() == ".csv" else Format.jsonl)
    try:
        parsed = list(read_rows(io.StringIO(text, newline=""), chosen))
    except (RowError, csv.Error) as exc:
        usage_error(f"{file}: {exc}")
    if len(parsed) > MAX_ROWS:
        usage_error(f"{file}: at most {MAX_ROWS} rows per import")
    rows = [r for r in parsed if isinstance(r, Row)]
    if not rows and not parsed:
        usage_error(f"{file}: no credentials in it")
    tally = Tally(rejected=[r for r in parsed if isinstance(r, tuple)])
    finished = False
    try:
        with connect(url, key, timeout) as client, _progress() as progress:
            seen = _existing(client)
            fresh: list[Row] = []
            for row in rows:
                if row.name in seen:
                    tally.existed += 1
                else:
                    seen.add(row.name)
                    fresh.append(row)
            task = progress.add_task("importing", total=len(rows), completed=tally.existed)
            for start in range(0, len(fresh), BATCH):
                batch = fresh[start : start + BATCH]
                _send(client, batch, tally)
                progress.advance(task, len(batch))
        finished = True
    finally:
        if not finished:
            # connect() has said why; say how far it got.
            err.print(
                f"stopped early: created {tally.created}, already existed {tally.existed} "
                "before the error; running the same file again skips those",
                markup=False,
            )
    err.print(
        f"created {tally.created}, already existed {tally.existed}, rejected {len(tally.rejected)}",
        markup=False,
    )
    if tally.rejected:
        table(("line", "reason"), sorted(tally.rejected), title="rejected rows", console=err)
        raise typer.Exit(int(Exit.REFUSED))


def _progress() -> Progress:
    # Drawn only on a terminal: in a pipe or a CI log it would be noise between the lines.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


__all__ = ["import_credentials"]
