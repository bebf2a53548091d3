"""``keyplane audit list|show|export`` and the sync client's audit methods, against a real
server (one per module and backend)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from keyplane.client import Client, ValidationError
from tests.cli.conftest import Run
from tests.conftest import ROOT_KEY
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def key_id(live_server: Server) -> str:
    """A key with a history: created, renamed, rotated, revoked."""
    with Client(live_server.base_url, ROOT_KEY, max_retries=0) as client:
        created = client.keys.create("cli audit")
        client.keys.update(created.data.id, name="cli audit 2")
        client.keys.rotate(created.data.id)
        client.keys.revoke(created.data.id)
        return created.data.id


def test_sync_client_reads_pages_and_exports(live_server: Server, key_id: str) -> None:
    with Client(live_server.base_url, ROOT_KEY, max_retries=0) as client:
        actions = [e.action for e in client.audit.iterate(key_id=key_id, page_size=1)]
        assert actions == ["key.revoked", "key.rotated", "key.updated", "key.created"]
        assert client.audit.list(key_id=key_id, limit=1).has_more
        audit = client.keys.audit(key_id, event_types="key.rotated")
        assert [e.event_type for e in audit.events] == ["key.rotated"]
        buffer = io.BytesIO()
        written = client.audit.export("json", to=buffer, key_id=key_id, include_pii=True)
        assert written == len(buffer.getvalue())
        lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
        assert [line["action"] for line in lines] == list(reversed(actions))
        assert lines[0]["actor_ip"] == "127.0.0.1"
        with pytest.raises(ValidationError):
            client.audit.export("json", to=io.BytesIO(), period="last_fortnight")


def test_list_and_show(cli: Run, key_id: str) -> None:
    listed = cli("audit", "list", "--key-id", key_id, "--json")
    assert listed.code == 0, listed.stderr
    entries = listed.json()["data"]
    assert [e["action"] for e in entries] == [
        "key.revoked",
        "key.rotated",
        "key.updated",
        "key.created",
    ]
    limited = cli("audit", "list", "--key-id", key_id, "--event-type", "key.r*", "--limit", "1")
    assert limited.code == 1  # key.r* is not an event type: a prefix ends in .*
    table = cli("audit", "list", "--key-id", key_id, "--action", "key.*", "--limit", "2")
    assert table.code == 0, table.stderr
    assert "2 entries, newest first" in table.stdout
    two = cli("audit", "list", "--key-id", key_id, "--action", "key.*", "--limit", "2", "--json")
    assert [e["action"] for e in two.json()["data"]] == ["key.revoked", "key.rotated"]
    shown = cli("audit", "show", entries[0]["id"], "--json")
    assert shown.code == 0 and shown.json()["target"]["id"] == key_id
    human = cli("audit", "show", entries[0]["id"])
    assert human.code == 0 and "hash" in human.stdout
    missing = cli("audit", "show", "aud_" + "0" * 26)
    assert missing.code == 1
    bad = cli("audit", "list", "--start", "yesterday")
    assert bad.code == 1 and "start" in bad.stderr


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_to_a_file(cli: Run, key_id: str, fmt: str, tmp_path: Path) -> None:
    target = tmp_path / f"audit.{fmt}"
    result = cli("audit", "export", "--format", fmt, "--output", str(target), "--key-id", key_id)
    assert result.code == 0, result.stderr
    assert "wrote" in result.stderr
    data = target.read_bytes()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode())))
    elif fmt == "json":
        rows = [json.loads(line) for line in data.decode().splitlines()]
    else:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert next(r["action"] for r in rows) == "key.created"
    assert all(r["actor_ip"] in ("127.0.0.0/24", None, "") for r in rows)  # masked by default


def test_export_refusals_are_one_line(cli: Run, tmp_path: Path) -> None:
    result = cli("audit", "export", "--output", str(tmp_path), "--format", "csv")
    assert result.code == 2 and "directory" in result.stderr
    result = cli("audit", "export", "-o", str(tmp_path / "x.csv"), "--period", "someday")
    assert result.code == 1 and "period" in result.stderr
    assert not (tmp_path / "x.csv").exists()
    reader = cli("audit", "list", key="not-a-key")
    assert reader.code == 4
