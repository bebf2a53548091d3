"""Audit log exports: CSV, NDJSON and Parquet written page by page, in bounded memory.

Each writer takes pages of rows (dicts of the ``audit_log`` columns) and gives back bytes as
soon as they are ready, so the HTTP layer can stream them: the whole export is never held in
memory, whatever its size. Parquet goes through pyarrow (the optional extra ``parquet``), one
row group per page.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from keyplane.domain.audit_view import mask_ip
from keyplane.errors import ExportUnavailableError

#: The columns of every export, in this order (CSV header, Parquet schema, NDJSON keys).
COLUMNS = (
    "id",
    "seq",
    "occurred_at",
    "org_id",
    "project_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_ip",
    "actor_user_agent",
    "request_id",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "count",
    "details",
    "prev_hash",
    "hash",
)
FORMATS = ("csv", "json", "parquet")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
EXTENSIONS = {"csv": "csv", "json": "ndjson", "parquet": "parquet"}
#: Cells a spreadsheet would run as a formula (CSV injection): they are prefixed with ``'``.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def exported(row: Mapping[str, Any], include_pii: bool) -> dict[str, Any]:
    """One entry as exported: every column, PII masked unless ``include_pii``."""
    entry = {name: row.get(name) for name in COLUMNS}
    if not include_pii:
        entry["actor_ip"] = mask_ip(entry["actor_ip"])
        entry["actor_user_agent"] = None
    return entry


class ExportWriter(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> bytes:
        """The bytes for this page of (already masked) entries."""
        ...

    def finish(self) -> bytes:
        """The bytes that end the file."""
        ...


class CsvWriter:
    """RFC 4180 CSV with a header; details as JSON text; times as ISO 8601."""

    def __init__(self) -> None:
        self._header = True

    def write(self, rows: list[dict[str, Any]]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if self._header:
            writer.writerow(COLUMNS)
            self._header = False
        writer.writerows([_csv_cell(row[name]) for name in COLUMNS] for row in rows)
        return buffer.getvalue().encode("utf-8")

    def finish(self) -> bytes:
        return self.write([]) if self._header else b""


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if type(value) is str:
        # An actor name or user agent comes from callers; a spreadsheet must not run it.
        return "'" + value if value.startswith(_FORMULA_START) else value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        # An actor name or user agent comes from callers; a spreadsheet must not run it.
        return "'" + value
    return value


class NdjsonWriter:
    """One JSON object per line (``application/x-ndjson``)."""

    def write(self, rows: list[dict[str, Any]]) -> bytes:
        lines = (json.dumps(row, default=_json_default, separators=(",", ":")) for row in rows)
        return "".join(line + "\n" for line in lines).encode("utf-8")

    def finish(self) -> bytes:
        return b""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


class _Sink:
    """A write-only file for pyarrow that hands over what was written since the last drain.

    ``tell`` counts every byte ever written: Parquet's footer records absolute offsets.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class ParquetWriter:
    """Parquet, one row group per page (zstd); details as JSON text, times as UTC µs."""

    def __init__(self) -> None:
        pa, pq = load_pyarrow()
        self._pa = pa
        fields = []
        for name in COLUMNS:
            if name in ("seq", "count"):
                fields.append(pa.field(name, pa.int64(), nullable=False))
            elif name == "occurred_at":
                fields.append(pa.field(name, pa.timestamp("us", tz="UTC"), nullable=False))
            else:
                fields.append(pa.field(name, pa.string()))
        self._schema = pa.schema(fields)
        self._sink = _Sink()
        self._writer = pq.ParquetWriter(
            pa.PythonFile(self._sink, mode="w"), self._schema, compression="zstd"
        )

    def write(self, rows: list[dict[str, Any]]) -> bytes:
        if not rows:
            return b""
        columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        for row in rows:
            for name in COLUMNS:
                value = row[name]
                if name == "details":
                    value = json.dumps(value, sort_keys=True, separators=(",", ":"))
                columns[name].append(value)
        table = self._pa.Table.from_pydict(columns, schema=self._schema)
        self._writer.write_table(table)
        return self._sink.drain()

    def finish(self) -> bytes:
        self._writer.close()
        return self._sink.drain()


def load_pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, or ExportUnavailableError saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportUnavailableError(
            "Parquet export needs pyarrow on the server: pip install 'keyplane[parquet]'",
            code="PARQUET_UNAVAILABLE",
        ) from None
    return pa, pq


def writer_for(fmt: str) -> ExportWriter:
    """A fresh writer for ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "csv":
        return CsvWriter()
    if fmt == "json":
        return NdjsonWriter()
    if fmt == "parquet":
        return ParquetWriter()
    raise ValueError(fmt)


def all_bytes(writer: ExportWriter, pages: Iterable[list[dict[str, Any]]]) -> bytes:
    """The whole file for ``pages`` (tests and small exports)."""
    return b"".join(writer.write(page) for page in pages) + writer.finish()
