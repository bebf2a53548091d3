"""The async client's audit methods against the in-process app, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from keyplane.client import APIError, AsyncClient, NotFoundError, ValidationError
from tests.conftest import Api


async def _history(sdk: AsyncClient) -> str:
    created = await sdk.keys.create("audited", owner="cust_1")
    key_id = created.data.id
    await sdk.keys.update(key_id, name="audited 2")
    await sdk.keys.rotate(key_id)
    await sdk.keys.revoke(key_id, reason="done")
    await sdk.keys.create("another")
    return key_id


async def test_list_iterate_get_and_the_per_key_audit(sdk: AsyncClient, api: Api) -> None:
    key_id = await _history(sdk)
    page = await sdk.audit.list(key_id=key_id, limit=2)
    assert [e.action for e in page.data] == ["key.revoked", "key.rotated"]
    assert page.has_more and page.next_cursor
    every = [e.action async for e in sdk.audit.iterate(key_id=key_id, page_size=1)]
    assert every == ["key.revoked", "key.rotated", "key.updated", "key.created"]
    keyed = [e.action async for e in sdk.audit.iterate(event_types="key.*", action="x.y")]
    assert keyed.count("key.created") == 2
    entry = await sdk.audit.get(page.data[0].id)
    assert entry.actor.id == "root" and entry.target.id == key_id
    assert entry.details.get("reason") in (None, "done")
    audit = await sdk.keys.audit(key_id, event_types=["key.created", "key.updated"])
    assert [e.event_type for e in audit.events] == ["key.updated", "key.created"]
    assert audit.events[0].user_id == "root"
    with pytest.raises(NotFoundError):
        await sdk.audit.get("aud_" + "0" * 26)
    with pytest.raises(ValidationError):
        await sdk.audit.list(event_types="key.%")


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
async def test_export_streams_to_a_path_or_a_file(
    sdk: AsyncClient, api: Api, fmt: str, tmp_path: Path
) -> None:
    key_id = await _history(sdk)
    target = tmp_path / f"audit.{fmt}"
    seen: list[int] = []
    written = await sdk.audit.export(fmt, to=target, key_id=key_id, on_progress=seen.append)
    assert written == target.stat().st_size > 0
    assert seen[-1] == written
    assert not (tmp_path / f"audit.{fmt}.part").exists()
    data = target.read_bytes()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode())))
    elif fmt == "json":
        rows = [json.loads(line) for line in data.decode().splitlines()]
    else:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert [r["action"] for r in rows] == [
        "key.created",
        "key.updated",
        "key.rotated",
        "key.revoked",
    ]
    buffer = io.BytesIO()
    assert await sdk.audit.export(fmt, to=buffer, key_id=key_id) == len(buffer.getvalue())


async def test_a_refused_export_leaves_no_file(
    sdk: AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "audit.parquet"
    with pytest.raises(ValidationError):
        await sdk.audit.export("xlsx", to=target)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(APIError) as caught:
        await sdk.audit.export("parquet", to=target)
    assert caught.value.status == 501
    assert caught.value.code == "PARQUET_UNAVAILABLE"
    assert list((tmp_path / "out").iterdir()) == []
