"""Exports stream page by page: never more than one page of entries is read at a time, each
page becomes bytes before the next is read, and Parquet gets one row group per page."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pyarrow.parquet as pq
import pytest

from keyplane.domain.clock import ManualClock
from keyplane.domain.tenancy import Principal
from keyplane.services import audit_read
from keyplane.services.audit_export import CsvWriter, exported
from keyplane.services.audit_read import AuditQuery
from keyplane.services.runtime import Runtime
from tests.audit_rows import entry, journal_of
from tests.conftest import Database


@pytest.fixture
async def runtime(database: Database, clock: ManualClock) -> AsyncIterator[Runtime]:
    runtime = await Runtime.start(database.settings(), clock)
    try:
        yield runtime
    finally:
        await runtime.stop()


class CountingScans:
    """Wraps the store's scan to see the size of every read."""

    def __init__(self, runtime: Runtime) -> None:
        self.real = runtime.store.audit_query.scan
        self.limits: list[int] = []
        self.returned: list[int] = []

    async def __call__(self, *args: Any) -> list[dict[str, Any]]:
        rows = await self.real(*args)
        self.limits.append(args[-1])
        self.returned.append(len(rows))
        return rows


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
async def test_an_export_reads_one_bounded_page_at_a_time(
    runtime: Runtime, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = runtime.default_project.org_id
    await runtime.store.audit.record(
        [journal_of(entry(org, 0, request_id=f"req-{n}")) for n in range(10)]
    )
    head = await runtime.store.audit_query.head_seq(org)
    monkeypatch.setattr(audit_read, "EXPORT_PAGE", 3)
    scans = CountingScans(runtime)
    monkeypatch.setattr(runtime.store.audit_query, "scan", scans)
    caller = Principal("root", org, None, ("audit:read",), is_root=True)
    export = await runtime.services.audit_read.export(caller, AuditQuery(), fmt)
    assert scans.limits == []  # nothing read before the stream is consumed
    chunks = []
    async for chunk in export.chunks:
        chunks.append(chunk)
        # Each chunk is out before the next page is read: at most one page held.
        assert len(scans.limits) <= len(chunks)
    assert set(scans.limits) == {3}
    assert sum(scans.returned) == head
    assert len(chunks) >= head // 3
    if fmt == "parquet":
        parquet = pq.ParquetFile(io.BytesIO(b"".join(chunks)))
        assert parquet.metadata.num_rows == head
        assert parquet.num_row_groups == -(-head // 3)


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    row = entry("org_" + "a" * 26, 1, actor_name="=HYPERLINK(evil)", actor_user_agent="@x")
    content = CsvWriter().write([exported(row, include_pii=True)]).decode()
    parsed = next(csv.DictReader(io.StringIO(content)))
    assert parsed["actor_name"] == "'=HYPERLINK(evil)"
    assert parsed["actor_user_agent"] == "'@x"
    assert parsed["target_id"] == "key_" + "1" * 26
    assert CsvWriter().finish().decode().startswith("id,seq,occurred_at")
