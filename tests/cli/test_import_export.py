"""``keyplane keys import`` and ``keys export``."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
import stat
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Run, invoke
from tests.client.conftest import Reply, ScriptedServer
from tests.client.test_retries import KEY_BODY
from tests.conftest import ROOT_KEY
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
    # The CSV rows have the same content as the JSON lines, but idempotency keys are random per
    # import (nothing derived from the rows): a second import is new keys, not replays.
    again = cli("keys", "import", str(tmp_path / "export.csv"), "-o", str(tmp_path / "2.out"))
    assert again.code == 0 and "created 3, already existed 0, rejected 0" in again.stderr, again
    printed = cli("keys", "export", "--owner", owner)
    assert len(printed.stdout.splitlines()) == 9


def test_re_running_an_import_with_its_journal_creates_nothing_new(
    cli: Run, tmp_path: Path
) -> None:
    owner = f"rerun-{secrets.token_hex(4)}"
    source = write(
        tmp_path / "keys.csv", f"name,owner\nalpha,{owner}\nbeta,{owner}\ngamma,{owner}\n"
    )
    journal = str(tmp_path / "import.journal")
    first = cli("keys", "import", str(source), "--journal", journal, "-o", str(tmp_path / "1"))
    assert first.code == 0 and "created 3, already existed 0, rejected 0" in first.stderr, first
    assert stat.S_IMODE((tmp_path / "import.journal").stat().st_mode) == 0o600
    second = cli("keys", "import", str(source), "--journal", journal)
    assert second.code == 0 and "created 0, already existed 3, rejected 0" in second.stderr
    assert "kp_live_" not in second.stdout + second.stderr  # shown once, by the first run
    listed = cli("keys", "list", "--owner", owner, "--json").json()["data"]
    assert sorted(k["name"] for k in listed) == ["alpha", "beta", "gamma"]


def test_a_leaked_management_key_cannot_replay_an_import(
    cli: Run, tmp_path: Path, live_server: Server
) -> None:
    """Issue item 3: the import's idempotency keys were HMAC(management key, row), and the
    rows are readable back from the key list, so the holder of the management key could
    replay each create and read its plaintext. Now they are random, nothing to compute."""
    owner = f"leak-{secrets.token_hex(4)}"
    source = write(tmp_path / "keys.jsonl", "".join(
        json.dumps({"name": f"n{n}", "owner": owner}) + "\n" for n in range(3)
    ))  # fmt: skip
    out = tmp_path / "secrets.jsonl"
    assert cli("keys", "import", str(source), "-o", str(out)).code == 0
    imported = [json.loads(line)["key"] for line in out.read_text().splitlines()]
    # The attacker reads the rows back and computes the old derived idempotency keys.
    listed = cli("keys", "list", "--owner", owner, "--json").json()["data"]
    assert len(listed) == 3
    for key in listed:
        fields = {"name": key["name"], "owner": key["owner"]}
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        derived = hmac.new(ROOT_KEY.encode(), canonical.encode(), hashlib.sha256)
        idempotency_key = "kp-import-" + derived.hexdigest()[:48]
        replay = httpx.post(
            f"{live_server.base_url}/v1/keys",
            json=fields,
            headers={"Authorization": f"Bearer {ROOT_KEY}", "Idempotency-Key": idempotency_key},
        )
        assert replay.status_code == 201 and "Idempotent-Replayed" not in replay.headers
        assert not any(secret in replay.text for secret in imported)


def test_two_imports_of_one_file_send_different_random_keys(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    source = write(
        tmp_path / "keys.jsonl",
        2 * (json.dumps({"name": "a", "tags": ["x"]}) + "\n"),
    )
    scripted.script(*(Reply(201, KEY_BODY) for _ in range(4)))
    env = {"KEYPLANE_URL": scripted.url, "KEYPLANE_MANAGEMENT_KEY": "kp_mgmt_x"}
    assert "created 2, already existed 0" in invoke("keys", "import", str(source), env=env).stderr
    assert "created 2, already existed 0" in invoke("keys", "import", str(source), env=env).stderr
    keys = [r.headers["idempotency-key"] for r in scripted.received]
    assert len(set(keys)) == 4  # identical rows, the same file twice: four attempts, four keys
    assert all(k.startswith("kp-import-") and len(k) == len("kp-import-") + 48 for k in keys)


def test_a_journal_reuses_keys_and_counts_replays_and_expired_ones_as_existing(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    source = write(
        tmp_path / "keys.jsonl",
        json.dumps({"name": "a", "tags": ["x"]}) + "\n" + json.dumps({"name": "b"}) + "\n",
    )
    journal = str(tmp_path / "journal")
    expired = {"code": "IDEMPOTENCY_KEY_EXPIRED", "detail": "made more than 600 s ago"}
    scripted.script(
        Reply(201, KEY_BODY), Reply(201, KEY_BODY),
        Reply(201, KEY_BODY, {"Idempotent-Replayed": "true"}), Reply(409, expired),
    )  # fmt: skip
    env = {"KEYPLANE_URL": scripted.url, "KEYPLANE_MANAGEMENT_KEY": "kp_mgmt_x"}
    first = invoke("keys", "import", str(source), "--journal", journal, env=env)
    assert "created 2, already existed 0" in first.stderr
    second = invoke("keys", "import", str(source), "--journal", journal, env=env)
    assert second.code == 0 and "created 0, already existed 2, rejected 0" in second.stderr
    assert second.stdout == ""  # replayed secrets were shown by the first run
    keys = [r.headers["idempotency-key"] for r in scripted.received]
    assert keys[0] == keys[2] and keys[1] == keys[3] and keys[0] != keys[1]
    # The journal holds random keys, never a secret.
    assert "kp_live" not in (tmp_path / "journal").read_text()


def test_a_file_that_is_not_a_journal_is_a_usage_error(cli: Run, tmp_path: Path) -> None:
    source = write(tmp_path / "keys.csv", "name\na\n")
    bogus = write(tmp_path / "bogus", "not json\n")
    assert cli("keys", "import", str(source), "--journal", str(bogus)).code == 2


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


def test_a_write_only_management_key_imports_and_gets_every_secret(
    cli: Run, tmp_path: Path, live_server: Server
) -> None:
    made = httpx.post(
        f"{live_server.base_url}/v1/management-keys",
        json={"name": "importer", "scopes": ["keys:write"]},
        headers={"Authorization": f"Bearer {ROOT_KEY}"},
    )
    writer = made.json()["key"]
    source = write(tmp_path / "keys.csv", "name,owner\nw1,o\nw2,o\n")
    out = tmp_path / "secrets.jsonl"
    result = cli("keys", "import", str(source), "-o", str(out), key=writer)
    assert result.code == 0 and "created 2, already existed 0, rejected 0" in result.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["name"] for w in written] == ["w1", "w2"]
    assert all(w["id"].startswith("key_") and w["key"].startswith("kp_live_") for w in written)
    shown = cli("keys", "create", "w3", "--owner", "o", key=writer)
    assert shown.code == 0 and "kp_live_" in shown.stdout and "status" in shown.stdout
