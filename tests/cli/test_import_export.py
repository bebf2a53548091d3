"""``keyplane keys import`` and ``keys export``."""

from __future__ import annotations

import csv
import io
import json
import secrets
import stat
from pathlib import Path

import pytest

from tests.cli.conftest import Run, invoke
from tests.client.conftest import Reply, ScriptedServer
from tests.client.test_retries import KEY_BODY
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_import_creates_good_rows_and_reports_bad_ones(cli: Run, tmp_path: Path) -> None:
    owner = f"imp-{secrets.token_hex(4)}"
    source = write(
        tmp_path / "keys.csv",
        "name,owner,tags,metadata,environment,scopes\n"
        f'first,{owner},a;b,"{{""tier"": ""pro""}}",live,chat\n'
        f"broken,{owner},,{{nope,live,\n"
        f",{owner},,,live,\n"
        f"third,{owner},,,staging,\n"
        f'second,{owner},"[""x""]",,test,\n',
    )
    out = tmp_path / "secrets.jsonl"
    result = cli("keys", "import", str(source), "--secrets-out", str(out))
    assert result.code == 1, result  # some rows were rejected
    assert "created 2, already existed 0, rejected 3" in result.stderr
    assert "metadata is not valid JSON" in result.stderr and "name is required" in result.stderr
    assert "VALIDATION_FAILED" in result.stderr
    for line in ("3", "4", "5"):
        assert f"│ {line}" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    made = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(m["line"], m["name"]) for m in made] == [(2, "first"), (6, "second")]
    assert made[0]["key"].startswith("kp_live_") and made[1]["key"].startswith("kp_test_")
    assert made[0]["key"] not in result.stdout + result.stderr
    listed = cli("keys", "list", "--owner", owner, "--json").json()["data"]
    assert [(k["name"], k["tags"], k["metadata"]) for k in listed] == [
        ("first", ["a", "b"], {"tier": "pro"}),
        ("second", ["x"], {}),
    ]
    assert cli("keys", "import", str(source), "--secrets-out", str(out)).code == 2  # exists


def test_jsonl_import_prints_secrets_when_no_file_is_given(cli: Run, tmp_path: Path) -> None:
    owner = f"jl-{secrets.token_hex(4)}"
    source = write(
        tmp_path / "keys.jsonl",
        json.dumps({"name": "one", "owner": owner, "scopes": ["chat"]})
        + "\n\n[1, 2]\n{not json\n"
        + json.dumps({"name": "two", "owner": owner, "tags": "not-a-list"})
        + "\n"
        + json.dumps({"name": "three", "owner": owner, "colour": "blue"})
        + "\n",
    )
    result = cli("keys", "import", str(source))
    assert result.code == 1
    assert "created 1, already existed 0, rejected 4" in result.stderr
    assert "unknown field(s): colour" in result.stderr
    [printed] = [json.loads(line) for line in result.stdout.splitlines()]
    assert printed["line"] == 1 and printed["key"].startswith("kp_live_")
    all_good = write(tmp_path / "good.jsonl", json.dumps({"name": "four", "owner": owner}) + "\n")
    assert cli("keys", "import", str(all_good)).code == 0


def test_unreadable_files_are_usage_errors(cli: Run, tmp_path: Path) -> None:
    assert cli("keys", "import", str(tmp_path / "missing.csv")).code == 2
    no_header = write(tmp_path / "bad.csv", "owner\nx\n")
    result = cli("keys", "import", str(no_header))
    assert result.code == 2 and "'name'" in result.stderr
    with_bom = tmp_path / "excel.csv"
    with_bom.write_bytes("\ufeffname\nfrom a spreadsheet\n".encode())
    imported = cli("keys", "import", str(with_bom), "-o", str(tmp_path / "bom.out"))
    assert imported.code == 0 and "created 1" in imported.stderr  # the BOM is not in "name"
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    assert cli("keys", "import", str(binary)).code == 2


def test_export_never_holds_secrets_and_imports_again(
    cli: Run, tmp_path: Path, live_server: Server
) -> None:
    owner = f"exp-{secrets.token_hex(4)}"
    made = [
        cli("keys", "create", f"e{n}", "--owner", owner, "--tag", "t", "--json").json()
        for n in range(3)
    ]
    for fmt in ("jsonl", "csv"):
        target = tmp_path / f"export.{fmt}"
        result = cli("keys", "export", "--owner", owner, "--format", fmt, "-o", str(target))
        assert result.code == 0 and "exported 3 key(s)" in result.stderr
        text = target.read_text()
        assert not any(m["key"] in text for m in made)
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            assert [r["name"] for r in rows] == ["e0", "e1", "e2"]
            assert rows[0]["tags"] == '["t"]' and rows[0]["status"] == "active"
        else:
            rows = [json.loads(line) for line in text.splitlines()]
            assert [r["id"] for r in rows] == [m["data"]["id"] for m in made]
    # An export is an import file: its read-only columns are ignored.
    back = cli("keys", "import", str(tmp_path / "export.jsonl"), "-o", str(tmp_path / "1.out"))
    assert back.code == 0 and "created 3, already existed 0, rejected 0" in back.stderr, back
    # The CSV rows have the same content as the JSON lines, so the same idempotency keys: the
    # server replays them.
    again = cli("keys", "import", str(tmp_path / "export.csv"), "-o", str(tmp_path / "2.out"))
    assert again.code == 0 and "created 0, already existed 3, rejected 0" in again.stderr, again
    printed = cli("keys", "export", "--owner", owner)
    assert len(printed.stdout.splitlines()) == 6


def test_re_running_an_import_creates_nothing_new(cli: Run, tmp_path: Path) -> None:
    owner = f"rerun-{secrets.token_hex(4)}"
    source = write(
        tmp_path / "keys.csv", f"name,owner\nalpha,{owner}\nbeta,{owner}\ngamma,{owner}\n"
    )
    first = cli("keys", "import", str(source), "-o", str(tmp_path / "first.jsonl"))
    assert first.code == 0 and "created 3, already existed 0, rejected 0" in first.stderr, first
    second = cli("keys", "import", str(source))
    assert second.code == 0 and "created 0, already existed 3, rejected 0" in second.stderr
    assert "kp_live_" not in second.stdout + second.stderr  # shown once, by the first run
    listed = cli("keys", "list", "--owner", owner, "--json").json()["data"]
    assert sorted(k["name"] for k in listed) == ["alpha", "beta", "gamma"]


def test_rows_carry_a_content_key_and_replays_count_as_existing(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    source = write(
        tmp_path / "keys.jsonl",
        json.dumps({"name": "a", "tags": ["x"]}) + "\n" + json.dumps({"name": "b"}) + "\n",
    )
    replayed = {"Idempotent-Replayed": "true"}
    scripted.script(
        Reply(201, KEY_BODY), Reply(201, KEY_BODY), Reply(201, KEY_BODY, replayed),
        Reply(201, KEY_BODY, replayed),
    )  # fmt: skip
    env = {"KEYPLANE_URL": scripted.url, "KEYPLANE_MANAGEMENT_KEY": "kp_mgmt_x"}
    first = invoke("keys", "import", str(source), env=env)
    assert "created 2, already existed 0" in first.stderr
    second = invoke("keys", "import", str(source), env=env)
    assert second.code == 0 and "created 0, already existed 2" in second.stderr
    assert second.stdout == ""  # replayed secrets were shown by the first run
    keys = [r.headers["idempotency-key"] for r in scripted.received]
    assert keys[0] == keys[2] and keys[1] == keys[3] and keys[0] != keys[1]
    # Keyed with the management key: nobody can compute it from the row alone.
    scripted.script(Reply(201, KEY_BODY), Reply(201, KEY_BODY))
    invoke("keys", "import", str(source), env={**env, "KEYPLANE_MANAGEMENT_KEY": "kp_mgmt_y"})
    assert scripted.received[4].headers["idempotency-key"] not in keys


def test_an_import_stops_at_an_auth_failure_and_keeps_what_it_made(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    source = write(tmp_path / "keys.csv", "name\na\nb\nc\n")
    scripted.script(
        Reply(201, KEY_BODY),
        Reply(401, {"code": "UNAUTHENTICATED", "detail": "management key revoked"}),
    )
    env = {"KEYPLANE_URL": scripted.url, "KEYPLANE_MANAGEMENT_KEY": "kp_mgmt_x"}
    out = tmp_path / "secrets.jsonl"
    result = invoke("keys", "import", str(source), "-o", str(out), env=env)
    assert result.code == 4 and "management key revoked" in result.stderr
    assert "stopped early: created 1" in result.stderr
    assert len(scripted.received) == 2  # row c was never sent
    assert json.loads(out.read_text())["line"] == 2
