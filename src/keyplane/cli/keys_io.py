"""``keyplane keys import`` and ``keyplane keys export``: keys in bulk, as CSV or JSON lines.

Each row is sent with a random ``Idempotency-Key``, reused only by the SDK's retries of that
one request, so a lost response never makes a key twice. It is random, not derived from the row
or the management key: anyone holding the management key can read rows back from the key list,
and a computable idempotency key would let them replay a create and read its secret.

``--journal FILE`` keeps those random keys (mode 600) so that re-running an interrupted import
with the same file and journal sends the same keys: rows already made answer as replays (within
the server's replay window) or as ``IDEMPOTENCY_KEY_EXPIRED`` (after it), and both count as
"already existed" instead of a duplicate. Without a journal every run creates every row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
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
from keyplane.client import APIError, Key

#: The fields of a row: exactly what ``keys create`` takes.
IMPORT_FIELDS = (
    "name",
    "environment",
    "project_id",
    "label",
    "description",
    "owner",
    "tags",
    "metadata",
    "scopes",
    "expires_at",
    "plan",
    "policy",
)
LIST_FIELDS = ("tags", "scopes")
OBJECT_FIELDS = ("metadata", "policy")
#: Read-only columns of an export, ignored on import so an export can be imported elsewhere.
EXPORT_ONLY = ("id", "hash", "start", "end", "org_id", "status", "created_at", "updated_at")
EXPORT_FIELDS = ("id", *IMPORT_FIELDS[:2], "status", *IMPORT_FIELDS[2:], "created_at")
MAX_ROWS = 100_000
MAX_FILE_BYTES = 64 * 2**20


class Format(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class RowError(ValueError):
    """A row that cannot be sent: its reason is reported with its line number."""


@dataclass
class Row:
    line: int
    fields: dict[str, Any]

    def digest(self) -> str:
        """SHA-256 of the row's line and content: how a journal recognises the row."""
        canonical = json.dumps([self.line, self.fields], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def new_idempotency_key() -> str:
    """A fresh random ``Idempotency-Key`` (192 bits): nothing an attacker reads predicts it."""
    return "kp-import-" + secrets.token_hex(24)


class Journal:
    """Each row's random ``Idempotency-Key``, kept so a re-run sends the same ones."""

    def __init__(self, path: Path) -> None:
        self._known: dict[str, str] = {}
        try:
            # Private: with the management key, an entry replays a create within the window.
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            usage_error(f"cannot open {path}: {exc.strerror}")
        self._file = os.fdopen(descriptor, "r+", encoding="utf-8")
        try:
            for text in self._file:
                entry = json.loads(text)
                self._known[str(entry["row"])] = str(entry["idempotency_key"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            self._file.close()
            usage_error(f"{path} is not an import journal")

    def key_for(self, row: Row) -> str:
        """The key this row was sent with before, or a new one, written down before use."""
        digest = row.digest()
        key = self._known.get(digest)
        if key is None:
            key = self._known[digest] = new_idempotency_key()
            entry = {"line": row.line, "row": digest, "idempotency_key": key}
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()
        return key

    def close(self) -> None:
        self._file.close()


@dataclass
class Outcome:
    created: int = 0
    existed: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _format_of(path: Path, given: Format | None) -> Format:
    if given is not None:
        return given
    return Format.csv if path.suffix.lower() == ".csv" else Format.jsonl


def _normalise(raw: dict[str, Any], from_csv: bool) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(IMPORT_FIELDS) - set(EXPORT_ONLY))
    if unknown:
        raise RowError(f"unknown field(s): {', '.join(unknown)}")
    row: dict[str, Any] = {}
    for name in IMPORT_FIELDS:
        value = raw.get(name)
        if value is None or (from_csv and value == ""):
            continue
        if from_csv and name in LIST_FIELDS:
            value = _csv_list(name, value)
        elif from_csv and name in OBJECT_FIELDS:
            value = _csv_json(name, value)
        if name in LIST_FIELDS and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise RowError(f"{name} must be a list of strings")
        if name in OBJECT_FIELDS and not isinstance(value, dict):
            raise RowError(f"{name} must be a JSON object")
        if name not in LIST_FIELDS + OBJECT_FIELDS and not isinstance(value, str):
            raise RowError(f"{name} must be a string")
        row[name] = value
    if not row.get("name"):
        raise RowError("name is required")
    return row


def _csv_list(name: str, text: str) -> Any:
    # A JSON array, or items separated by ";".
    if text.lstrip().startswith("["):
        return _csv_json(name, text)
    return [item.strip() for item in text.split(";") if item.strip()]


def _csv_json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError(f"{name} is not valid JSON ({exc.msg})") from None


def read_rows(handle: IO[str], fmt: Format) -> Iterator[Row | tuple[int, str]]:
    """Rows to send, or (line, reason) for rows that cannot be sent."""
    if fmt is Format.csv:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "name" not in reader.fieldnames:
            raise RowError("the CSV header must name the columns, including 'name'")
        for raw in reader:
            line = reader.line_num
            if None in raw:
                yield line, "more cells than header columns"
                continue
            try:
                yield Row(line, _normalise(dict(raw), from_csv=True))
            except RowError as exc:
                yield line, str(exc)
        return
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            yield line, f"not valid JSON ({exc.msg})"
            continue
        if not isinstance(raw, dict):
            yield line, "each line must be a JSON object"
            continue
        try:
            yield Row(line, _normalise(raw, from_csv=False))
        except RowError as exc:
            yield line, str(exc)


def _open_secrets(path: Path | None) -> IO[str] | None:
    if path is None:
        return None
    try:
        # Created new and private: it holds plaintext keys.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        usage_error(f"{path} exists; choose a new file for the secrets")
    except OSError as exc:
        usage_error(f"cannot create {path}: {exc.strerror}")
    return os.fdopen(descriptor, "w", encoding="utf-8")


def import_keys(
    file: Annotated[Path, typer.Argument(help="CSV (with a header) or JSON lines.")],
    fmt: Annotated[
        Format | None, typer.Option("--format", help="Default: from the file's extension.")
    ] = None,
    secrets_out: Annotated[
        Path | None,
        typer.Option(
            "--secrets-out",
            "-o",
            help="Write the new keys' secrets (JSON lines) to this new file, mode 600. "
            "Default: print them on stdout.",
        ),
    ] = None,
    journal_path: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            help="Keep each row's random Idempotency-Key in this file (mode 600) and reuse "
            "it: re-running an interrupted import with the same journal does not create "
            "its rows twice. Without it, every run creates every row.",
        ),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Create the keys of a file, once: re-running it does not create them again."""
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            usage_error(f"{file}: larger than {MAX_FILE_BYTES // 2**20} MiB; split it")
        # utf-8-sig: a byte order mark (as spreadsheet programs write) is not part of a name.
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        usage_error(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
    try:
        parsed = list(read_rows(io.StringIO(text, newline=""), _format_of(file, fmt)))
    except (RowError, csv.Error) as exc:
        usage_error(f"{file}: {exc}")
    if len(parsed) > MAX_ROWS:
        usage_error(f"{file}: at most {MAX_ROWS} rows per import")
    outcome = Outcome(rejected=[r for r in parsed if isinstance(r, tuple)])
    rows = [r for r in parsed if isinstance(r, Row)]
    secrets = _open_secrets(secrets_out)
    journal = None if journal_path is None else Journal(journal_path)
    finished = False
    try:
        with connect(url, key, timeout) as client, _progress() as progress:
            task = progress.add_task("importing", total=len(rows))
            for row in rows:
                try:
                    created = client.keys.create(
                        imported=True,
                        idempotency_key=(
                            new_idempotency_key() if journal is None else journal.key_for(row)
                        ),
                        **row.fields,
                    )
                except APIError as exc:
                    if exc.status in (401, 403) or exc.status >= 500:
                        raise  # the same for every row: stop here, connect() reports it
                    if exc.code == "IDEMPOTENCY_KEY_EXPIRED":
                        # Made by an earlier run, past the replay window: its secret was
                        # written then and is not shown again.
                        outcome.existed += 1
                    else:
                        outcome.rejected.append((row.line, f"{exc.code}: {exc.detail}"))
                else:
                    if created.replayed:
                        outcome.existed += 1
                    else:
                        outcome.created += 1
                        secret = {
                            "line": row.line,
                            "id": created.data.id,
                            "name": row.fields["name"],
                            "key": created.key,
                        }
                        # Written as each key is made: an interrupted import loses no secret.
                        if secrets is not None:
                            secrets.write(json.dumps(secret) + "\n")
                            secrets.flush()
                        else:
                            typer.echo(json.dumps(secret))
                progress.advance(task)
        finished = True
    finally:
        if secrets is not None:
            secrets.close()
        if journal is not None:
            journal.close()
        if not finished:
            # connect() has said why; say how far it got, so the operator knows what to do.
            again = (
                "running the same file with the same --journal again does not create those twice"
                if journal is not None
                else "running the file again creates them again (use --journal to resume)"
            )
            err.print(
                f"stopped early: created {outcome.created}, already existed {outcome.existed}"
                f" before the error; {again}",
                markup=False,
            )
    _summary(outcome, secrets_out)
    if outcome.rejected:
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


def _summary(outcome: Outcome, secrets_out: Path | None) -> None:
    where = f", secrets in {secrets_out}" if secrets_out and outcome.created else ""
    err.print(
        f"created {outcome.created}, already existed {outcome.existed}, "
        f"rejected {len(outcome.rejected)}{where}",
        markup=False,
    )
    if outcome.rejected:
        rejected = sorted(outcome.rejected)
        table(("line", "reason"), rejected, title="rejected rows", console=err)


def export_row(key: Key) -> dict[str, Any]:
    """A key as an export row: its importable fields and a few read-only ones, never a secret."""
    data = key.model_dump(mode="json")
    return {name: data.get(name) for name in EXPORT_FIELDS}


def export_keys(
    fmt: Annotated[Format, typer.Option("--format")] = Format.jsonl,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Default: stdout.")] = None,
    owner: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    project: Annotated[str | None, typer.Option()] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Write every key (never its secret) as CSV or JSON lines, importable elsewhere."""
    given = {"owner": owner, "status": status, "project": project}
    filters: Any = {k: v for k, v in given.items() if v is not None}
    try:
        handle = (
            open(output, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
            if output is not None
            else None
        )
    except OSError as exc:
        usage_error(f"cannot write {output}: {exc.strerror}")
    sink = handle if handle is not None else typer.get_text_stream("stdout")
    count = 0
    try:
        writer = (
            csv.DictWriter(sink, fieldnames=EXPORT_FIELDS, lineterminator="\n")
            if fmt is Format.csv
            else None
        )
        if writer is not None:
            writer.writeheader()
        with connect(url, key, timeout) as client, _progress() as progress:
            task = progress.add_task("exporting", total=None)
            for found in client.keys.iterate(page_size=100, **filters):
                progress.advance(task)
                row = export_row(found)
                if writer is not None:
                    writer.writerow(
                        {
                            k: json.dumps(v) if isinstance(v, list | dict) else v
                            for k, v in row.items()
                        }
                    )
                else:
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    finally:
        if handle is not None:
            handle.close()
    if output is not None:
        err.print(f"exported {count} key(s) to {output}", markup=False)


__all__ = ["export_keys", "import_keys"]
