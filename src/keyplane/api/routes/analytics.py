"""Usage analytics: ``/v1/keys/{id}/analytics``, ``/v1/analytics`` and ``/v1/usage/export``.

Read from the rollups (docs/analytics.md), never from a scan of the ledger. Credits are shown
exactly (``api/exact.py``); latencies are milliseconds, error rates percentages.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from keyplane.api.deps import AnalyticsDep, PrincipalDep
from keyplane.api.exact import ExactJsonRoute, credits
from keyplane.api.fields import TEXT_PATTERN
from keyplane.api.params import CLEAN_TEXT, check_query_text, reject_unknown_params
from keyplane.domain import ids, money
from keyplane.domain.analytics import Sums
from keyplane.errors import NotFoundError, ValidationError
from keyplane.services.analytics import MAX_FILTER_VALUES
from keyplane.services.analytics import Query as GroupQuery
from keyplane.store.analytics import Group, GroupBy

router = APIRouter(prefix="/v1", tags=["analytics"], route_class=ExactJsonRoute)

_FILTER_TEXT = 200
PeriodParam = Annotated[
    str,
    Query(
        pattern=r"^[0-9]{1,5}[mhd]$",
        description="how far back: a number and m, h or d (7d); a whole number of buckets "
        "of the granularity, at most 2000 of them, within its retention",
    ),
]


def _repeatable(what: str) -> Any:
    """A repeatable text filter, documented as the checks in ``_values`` enforce it."""
    return Query(
        description=f"repeatable {what}",
        json_schema_extra={
            "maxItems": MAX_FILTER_VALUES,
            "items": {"type": "string", "maxLength": _FILTER_TEXT, "pattern": TEXT_PATTERN},
        },
    )


Granularity = Literal["minute", "hour", "day"]


def _time(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def usage_out(sums: Sums) -> dict[str, Any]:
    """A rollup's measures as the API shows them."""
    # Written out rather than through _round and a dict of percentiles: a 720-point series
    # calls this per point, and the helper calls were a fifth of the answer's CPU.
    avg = sums.avg_latency_ms
    p50, p95, p99 = sums.percentile_values()
    return {
        "requests": sums.requests,
        "errors": sums.errors,
        "error_rate": round(sums.error_rate, 3),
        "cost": credits(sums.cost_micros),
        "input_tokens": sums.input_tokens,
        "output_tokens": sums.output_tokens,
        "avg_latency_ms": None if avg is None else round(avg, 3),
        "p50": None if p50 is None else round(p50, 3),
        "p95": None if p95 is None else round(p95, 3),
        "p99": None if p99 is None else round(p99, 3),
    }


@router.get("/keys/{key_id}/analytics", response_class=JSONResponse)
async def key_analytics(
    request: Request,
    key_id: str,
    principal: PrincipalDep,
    service: AnalyticsDep,
    period: PeriodParam = "7d",
    granularity: Granularity = "hour",
) -> JSONResponse:
    """One key's usage over a period: totals, series, percentiles, models, features."""
    reject_unknown_params(request, {"period", "granularity"})
    if not ids.looks_like_id(key_id, "key"):
        raise NotFoundError("no such key", code="KEY_NOT_FOUND")
    report = await service.key_report(principal, key_id, period, granularity)
    rollups = report.rollups
    total = Sums.summed(list(rollups.series.values()))
    verdicts: dict[str, int] = {}
    for counts in rollups.verdicts.values():
        for code, count in counts.items():
            verdicts[code] = verdicts.get(code, 0) + count
    series = []
    # Buckets without usage all read the same: shaped once, not per point.
    empty = usage_out(Sums())
    for start in report.window.starts():
        sums = rollups.series.get(start)
        point = empty if sums is None else usage_out(sums)
        verified = rollups.verdicts.get(start, {})
        series.append({"start": _time(start), **point, "verifications": verified})
    # A JSONResponse, not a dict: FastAPI's generic encoder walks every value of the up to
    # 2000-point series again, which cost more than the whole query.
    return JSONResponse(
        {
            "key_id": key_id,
            "period": period,
            "granularity": granularity,
            "start": _time(report.window.start),
            "end": _time(report.window.end),
            "total_requests": total.requests,
            "total_cost": credits(total.cost_micros),
            "total_errors": total.errors,
            "avg_latency_ms": _round(total.avg_latency_ms),
            "error_rate": _round(total.error_rate),
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "latency": {name: _round(value) for name, value in total.percentiles().items()},
            "verifications": verdicts,
            "models": [{"name": name, **usage_out(sums)} for name, sums in _ranked(rollups.models)],
            "features": [
                {"name": name, "usage_count": sums.requests, **usage_out(sums)}
                for name, sums in _ranked(rollups.features)
            ],
            "series": series,
        }
    )


def _ranked(breakdown: dict[str, Sums]) -> list[tuple[str, Sums]]:
    return sorted(breakdown.items(), key=lambda item: (-item[1].requests, item[0]))


def _values(request: Request, name: str) -> tuple[str, ...]:
    """A repeatable filter (``?model=a&model=b``), each value checked and bounded."""
    values = request.query_params.getlist(name)
    if len(values) > MAX_FILTER_VALUES:
        raise ValidationError(f"{name}: at most {MAX_FILTER_VALUES} values")
    checked = []
    for value in values:
        if len(value) > _FILTER_TEXT:
            raise ValidationError(f"{name}: at most {_FILTER_TEXT} characters")
        checked.append(check_query_text(name, value) or "")
    return tuple(checked)


_GROUP_PARAMS = {
    "group_by",
    "period",
    "granularity",
    "order_by",
    "limit",
    "project",
    "key_id",
    "owner",
    "model",
    "code",
}


@router.get("/analytics", response_class=JSONResponse)
async def grouped_analytics(
    request: Request,
    principal: PrincipalDep,
    service: AnalyticsDep,
    group_by: Literal["key", "owner", "model", "project", "code"],
    period: PeriodParam = "24h",
    granularity: Granularity = "hour",
    order_by: Literal[
        "requests", "errors", "cost", "input_tokens", "output_tokens", "verifications", "refused"
    ] = "requests",
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    project: Annotated[str | None, Query(max_length=40, json_schema_extra=CLEAN_TEXT)] = None,
    key_id: Annotated[list[str] | None, _repeatable("key id")] = None,
    owner: Annotated[list[str] | None, _repeatable("owner")] = None,
    model: Annotated[list[str] | None, _repeatable("model")] = None,
    code: Annotated[list[str] | None, _repeatable("verdict code")] = None,
) -> JSONResponse:
    """Top groups of the organization's (or a project's) usage: keys, owners, models, ..."""
    reject_unknown_params(request, _GROUP_PARAMS)
    query = GroupQuery(
        group_by=group_by,
        period=period,
        granularity=granularity,
        order_by=order_by,
        limit=limit,
        project_id=check_query_text("project", project),
        key_ids=_values(request, "key_id"),
        owners=_values(request, "owner"),
        models=_values(request, "model"),
        codes=_values(request, "code"),
    )
    window, groups = await service.grouped(principal, query)
    return JSONResponse(
        {
            "group_by": group_by,
            "order_by": order_by,
            "period": period,
            "granularity": granularity,
            "start": _time(window.start),
            "end": _time(window.end),
            "data": [_group_out(group_by, group) for group in groups],
        }
    )


def _group_out(group_by: GroupBy, group: Group) -> dict[str, Any]:
    verifications = sum(group.verdicts.values())
    out: dict[str, Any] = {group_by: group.name}
    if group_by != "code":
        out.update(usage_out(group.usage))
    if group_by != "model":
        out["verifications"] = verifications
        out["refused"] = verifications - group.verdicts.get("VALID", 0)
        out["by_code"] = group.verdicts
    return out


# -- export -----------------------------------------------------------------------------------

_EXPORT_FIELDS = (
    "bucket_start",
    "key_id",
    "project_id",
    "owner",
    "requests",
    "errors",
    "cost",
    "input_tokens",
    "output_tokens",
    "latency_count",
    "avg_latency_ms",
    "p50",
    "p95",
    "p99",
)
_MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


def _export_row(row: dict[str, Any]) -> dict[str, Any]:
    sums = Sums.of(row)
    percentiles = sums.percentiles()
    return {
        "bucket_start": _time(row["bucket_start"]),
        "key_id": row["key_id"],
        "project_id": row["project_id"],
        "owner": row["owner"],
        "requests": sums.requests,
        "errors": sums.errors,
        # Exact decimal text: a float would round large or fine amounts.
        "cost": money.to_text(sums.cost_micros),
        "input_tokens": sums.input_tokens,
        "output_tokens": sums.output_tokens,
        "latency_count": sums.latency_count,
        "avg_latency_ms": _round(sums.avg_latency_ms),
        **{name: _round(value) for name, value in percentiles.items()},
    }


@router.get(
    "/usage/export",
    response_class=StreamingResponse,
    responses={200: {"content": {media: {} for media in _MEDIA.values()}}},
)
async def export_usage(
    request: Request,
    principal: PrincipalDep,
    service: AnalyticsDep,
    format: Literal["csv", "ndjson", "parquet"] = "csv",
    period: PeriodParam = "7d",
    granularity: Granularity = "day",
    project: Annotated[str | None, Query(max_length=40, json_schema_extra=CLEAN_TEXT)] = None,
) -> StreamingResponse:
    """Rollups per key and bucket, streamed (csv, NDJSON or parquet) in bounded memory."""
    reject_unknown_params(request, {"format", "period", "granularity", "project"})
    if format == "parquet":
        _require_pyarrow()
    _window, chunks = await service.export(
        principal, period, granularity, check_query_text("project", project)
    )
    if format == "csv":
        body: AsyncIterator[bytes] = _csv_chunks(chunks)
    elif format == "ndjson":
        body = _ndjson_chunks(chunks)
    else:
        body = _parquet_chunks(chunks)
    return StreamingResponse(
        body,
        media_type=_MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="usage.{format}"'},
    )


async def _csv_chunks(chunks: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    yield buffer.getvalue().encode()
    async for rows in chunks:
        buffer.seek(0)
        buffer.truncate()
        for row in rows:
            writer.writerow(_export_row(row))
        yield buffer.getvalue().encode()


async def _ndjson_chunks(chunks: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    async for rows in chunks:
        yield "".join(json.dumps(_export_row(row)) + "\n" for row in rows).encode()


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValidationError(
            "format=parquet needs pyarrow on the server (pip install keyplane[parquet])",
            code="PARQUET_UNAVAILABLE",
        ) from None


async def _parquet_chunks(chunks: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """One row group per chunk, written to a buffer that is emptied after each: memory stays
    at one chunk whatever the export's size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("bucket_start", pa.string()),
            ("key_id", pa.string()),
            ("project_id", pa.string()),
            ("owner", pa.string()),
            ("requests", pa.int64()),
            ("errors", pa.int64()),
            ("cost", pa.string()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("latency_count", pa.int64()),
            ("avg_latency_ms", pa.float64()),
            ("p50", pa.float64()),
            ("p95", pa.float64()),
            ("p99", pa.float64()),
        ]
    )
    spool = _Spool()
    with pq.ParquetWriter(pa.PythonFile(spool, mode="w"), schema) as writer:
        async for rows in chunks:
            table = pa.Table.from_pylist([_export_row(row) for row in rows], schema=schema)
            writer.write_table(table)
            yield spool.drain()
    yield spool.drain()


class _Spool:
    """A write-only file that hands its bytes out as they come; it keeps counting the
    position, which the parquet footer's offsets are taken from."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data
