"""The real ``keyplane`` executable: ``serve`` over HTTP, ``migrate``, ``version``, bad config."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from keyplane import __version__
from keyplane.domain import keyformat
from keyplane.domain.keyformat import SCAN_PATTERN, KeyKind
from tests.conftest import (
    PG_URL,
    ROOT_KEY,
    SERVER_SECRET,
    free_port,
    pg_execute,
    postgres_schema,
    require_postgres,
)
from tests.e2e.conftest import (
    Backend,
    Server,
    ServerFactory,
    pg_fetch_column,
    run_cli,
)

pytestmark = pytest.mark.e2e

KEYPLANE_TABLES = {
    "organizations",
    "projects",
    "api_keys",
    "api_key_tags",
    "api_key_secrets",
    "management_keys",
}


# -- helpers ----------------------------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def create_key(client: httpx.Client, **fields: Any) -> tuple[str, dict[str, Any]]:
    body = ok(client.post("/v1/keys", json={"name": "e2e key", **fields}), 201)
    return body["key"], body["data"]


def verify_code(client: httpx.Client, key: str) -> str:
    code: str = ok(client.post("/v1/verify", json={"key": key}))["code"]
    return code


def create_management_key(client: httpx.Client, *scopes: str) -> tuple[str, dict[str, Any]]:
    body = ok(client.post("/v1/management-keys", json={"name": "e2e", "scopes": list(scopes)}), 201)
    return body["key"], body["data"]


def generated_root_keys(text: str) -> list[str]:
    return [m for m in SCAN_PATTERN.findall(text) if "_mgmt_" in m]


def sqlite_tables(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {row[0] for row in rows}


def postgres_tables(schema: str) -> set[str]:
    names = asyncio.run(
        pg_fetch_column(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
    )
    return {str(name) for name in names}


def assert_one_clean_line(result: Any, *fragments: str) -> None:
    """A failed CLI run: non-zero, one line on stderr mentioning ``fragments``, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for fragment in fragments:
        assert fragment in lines[0], output


# -- keep-alive ------------------------------------------------------------------------------

#: What httpx (and so Keyplane's own client) and nginx keep an idle pooled connection for.
HTTPX_KEEPALIVE_EXPIRY = httpx.Limits().keepalive_expiry or 0.0
NGINX_UPSTREAM_KEEPALIVE_TIMEOUT = 60.0


def _get_healthz(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: keyplane.test\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def test_an_idle_connection_outlives_a_pooling_clients_keepalive_expiry(
    live_server: Server,
) -> None:
    # A pooling client reuses an idle connection until its own expiry (httpx: 5 s). At
    # uvicorn's default keep-alive of 5 s the server closed such connections at the very
    # moment the client sent its next request on one: the request was lost in a reset
    # (httpx.ReadError, as test_500_duplicate_usage_reports_count_once saw under load).
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30.0) as sock:
        assert _get_healthz(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(HTTPX_KEEPALIVE_EXPIRY + 2.0)  # idle past the client's expiry, not racing it
        assert _get_healthz(sock).startswith(b"HTTP/1.1 200 "), "server closed an idle connection"


def test_serve_keeps_idle_connections_longer_than_pooling_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from keyplane.cli.main import app

    options: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda _app, **kwargs: options.update(kwargs))
    env = {
        "KEYPLANE_DATABASE_URL": f"sqlite:///{tmp_path / 'keyplane.db'}",
        "KEYPLANE_SECRET": SERVER_SECRET,
        "KEYPLANE_ROOT_KEY": ROOT_KEY,
    }
    result = CliRunner().invoke(app, ["serve"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert options["timeout_keep_alive"] > HTTPX_KEEPALIVE_EXPIRY
    assert options["timeout_keep_alive"] > NGINX_UPSTREAM_KEEPALIVE_TIMEOUT


# -- probes and documents ---------------------------------------------------------------------


def test_probes_answer(live_server: Server) -> None:
    with live_server.client(key=None) as client:
        assert ok(client.get("/healthz"))["status"] == "ok"
        assert ok(client.get("/readyz")) == {"status": "ready"}


def test_openapi_document_is_served_as_3_1(live_server: Server) -> None:
    with live_server.client(key=None) as client:
        document = ok(client.get("/openapi.json"))
    assert document["openapi"].startswith("3.1")
    assert document["info"]["version"] == __version__
    assert {"/v1/keys", "/v1/verify", "/v1/management-keys"} <= set(document["paths"])


def test_management_api_requires_a_key(live_server: Server) -> None:
    with live_server.client(key=None) as client:
        response = client.get("/v1/keys")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith("application/problem+json")


# -- the key lifecycle ------------------------------------------------------------------------


def test_key_lifecycle_create_verify_rotate_revoke(live_server: Server) -> None:
    with live_server.client() as client:
        old_key, data = create_key(client, owner="cus_e2e", scopes=["read"])
        assert keyformat.parse(old_key) is not None
        assert data["status"] == "active"
        verdict = ok(client.post("/v1/verify", json={"key": old_key}))
        assert (verdict["valid"], verdict["code"], verdict["key_id"]) == (True, "VALID", data["id"])
        assert verdict["owner"] == "cus_e2e"

        rotated = ok(
            client.post(f"/v1/keys/{data['id']}/rotate", json={"grace_period_seconds": 3600})
        )
        new_key = rotated["key"]
        assert new_key != old_key
        assert rotated["data"]["id"] == data["id"]
        assert rotated["data"]["hash"] != data["hash"]
        assert verify_code(client, old_key) == "VALID"  # inside the grace period
        assert verify_code(client, new_key) == "VALID"

        revoked = ok(client.request("DELETE", f"/v1/keys/{data['id']}", json={"reason": "e2e"}))
        assert revoked["data"]["status"] == "revoked"
        assert verify_code(client, new_key) == "REVOKED"
        assert verify_code(client, old_key) in {"REVOKED", "NOT_FOUND"}
        assert ok(client.get(f"/v1/keys/{data['id']}"))["data"]["revoked_reason"] == "e2e"


def test_rotation_without_grace_retires_the_old_secret_at_once(live_server: Server) -> None:
    with live_server.client() as client:
        old_key, data = create_key(client)
        assert verify_code(client, old_key) == "VALID"
        new_key = ok(client.post(f"/v1/keys/{data['id']}/rotate"))["key"]
        assert verify_code(client, old_key) == "NOT_FOUND"
        assert verify_code(client, new_key) == "VALID"


def test_disable_and_enable(live_server: Server) -> None:
    with live_server.client() as client:
        key, data = create_key(client)
        assert verify_code(client, key) == "VALID"
        disabled = ok(client.post(f"/v1/keys/{data['id']}/disable", json={"reason": "unpaid"}))
        assert disabled["data"]["status"] == "disabled"
        assert verify_code(client, key) == "DISABLED"
        assert ok(client.post(f"/v1/keys/{data['id']}/enable"))["data"]["status"] == "active"
        assert verify_code(client, key) == "VALID"


def test_verify_codes_for_unknown_and_malformed_keys(live_server: Server) -> None:
    with live_server.client() as client:
        assert verify_code(client, keyformat.generate(KeyKind.LIVE).text) == "NOT_FOUND"
        assert verify_code(client, "kp_live_definitely-not-a-key") == "MALFORMED"


# -- management keys --------------------------------------------------------------------------


def test_management_keys_create_list_use_and_revoke(live_server: Server) -> None:
    with live_server.client() as root:
        mgmt_key, mgmt = create_management_key(root, "keys:read", "keys:write", "verify")
        assert mgmt_key.startswith("kp_mgmt_")
        listed = ok(root.get("/v1/management-keys", params={"limit": 100}))
        assert mgmt["id"] in {item["id"] for item in listed["data"]}
        assert all("key" not in item and "hash" not in item for item in listed["data"])

        with live_server.client(mgmt_key) as scoped:
            key, _ = create_key(scoped)
            assert verify_code(scoped, key) == "VALID"  # warms the management key cache
            denied = scoped.get("/v1/management-keys")
            assert denied.status_code == 403, denied.text

            revoked = ok(root.delete(f"/v1/management-keys/{mgmt['id']}"))
            assert revoked["data"]["revoked_at"] is not None

            # Revocation takes effect on the very next request, cache or no cache.
            for _ in range(3):
                assert scoped.get("/v1/keys").status_code == 401
                assert scoped.post("/v1/verify", json={"key": key}).status_code == 401


def test_an_api_key_is_no_management_key(live_server: Server) -> None:
    with live_server.client() as root:
        api_key, _ = create_key(root)
    with live_server.client(api_key) as client:
        for response in (
            client.get("/v1/keys"),
            client.post("/v1/keys", json={"name": "x"}),
            client.post("/v1/verify", json={"key": api_key}),
            client.get("/v1/management-keys"),
        ):
            assert response.status_code == 401, response.text


def test_a_management_key_does_not_pass_verify(live_server: Server) -> None:
    with live_server.client() as root:
        mgmt_key, _ = create_management_key(root, "verify")
        verdict = ok(root.post("/v1/verify", json={"key": mgmt_key}))
    assert (verdict["valid"], verdict["code"], verdict["key_id"]) == (False, "NOT_FOUND", None)


# -- first start, restarts and the server secret ----------------------------------------------


def test_first_start_writes_the_root_key_to_a_private_file_not_the_logs(
    backend: Backend, start_server: ServerFactory, tmp_path: Path
) -> None:
    env = {**backend.env, "KEYPLANE_ROOT_KEY": None}
    first = start_server(env)
    # stderr is a file here, as under systemd or Docker: the log stream, so no key in it.
    assert generated_root_keys(first.stdout + first.stderr) == [], first.output
    key_file = (
        backend.sqlite_file.with_name(backend.sqlite_file.name + ".root-key")
        if backend.sqlite_file is not None
        else tmp_path / "keyplane.root-key"  # the server's working directory
    )
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert str(key_file) in first.stderr, first.output
    shown = generated_root_keys(key_file.read_text())
    assert len(shown) == 1
    root_key = shown[0]
    assert keyformat.parse(root_key) is not None

    with first.client(root_key) as client:
        api_key, _ = create_key(client)
        assert verify_code(client, api_key) == "VALID"
        assert client.get("/v1/management-keys").status_code == 200
    with first.client(ROOT_KEY) as client:  # KEYPLANE_ROOT_KEY is unset: no such key
        assert client.get("/v1/keys").status_code == 401
    first.stop_cleanly()

    second = start_server(env)
    assert generated_root_keys(second.stdout + second.stderr) == [], second.output
    with second.client(root_key) as client:
        assert verify_code(client, api_key) == "VALID"
        listed = ok(client.get("/v1/management-keys"))["data"]
    assert [item["name"] for item in listed] == ["root"]


def test_no_root_key_is_generated_when_one_is_configured(
    backend: Backend, start_server: ServerFactory
) -> None:
    server = start_server(backend.env)
    assert generated_root_keys(server.stdout + server.stderr) == [], server.output
    with server.client() as client:
        assert ok(client.get("/v1/management-keys"))["data"] == []


def test_the_generated_secret_file_is_private_and_kept_across_restarts(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    database = tmp_path / "data" / "keyplane.db"
    env = {"KEYPLANE_DATABASE_URL": f"sqlite:///{database}", "KEYPLANE_ROOT_KEY": ROOT_KEY}
    secret_file = database.with_name("keyplane.db.secret")

    first = start_server(env)
    assert secret_file.exists(), first.output
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text()
    assert len(secret.strip()) >= 32
    with first.client() as client:
        api_key, data = create_key(client)
        assert verify_code(client, api_key) == "VALID"
    first.stop_cleanly()

    second = start_server(env)
    assert secret_file.read_text() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    with second.client() as client:
        assert verify_code(client, api_key) == "VALID"
        assert ok(client.get(f"/v1/keys/{data['hash']}"))["data"]["id"] == data["id"]
    second.stop_cleanly()

    # The secret is what the hashes depend on: with another one, the stored key is unknown.
    third = start_server({**env, "KEYPLANE_SECRET": SERVER_SECRET})
    with third.client() as client:
        assert verify_code(client, api_key) == "NOT_FOUND"


def test_keys_survive_a_restart(backend: Backend, start_server: ServerFactory) -> None:
    first = start_server(backend.env)
    with first.client() as client:
        api_key, data = create_key(client)
        mgmt_key, _ = create_management_key(client, "keys:read", "verify")
    first.stop_cleanly()

    second = start_server(backend.env)
    with second.client(mgmt_key) as client:
        assert verify_code(client, api_key) == "VALID"
        assert ok(client.get(f"/v1/keys/{data['id']}"))["data"]["hash"] == data["hash"]


# -- keyplane migrate / version ---------------------------------------------------------------


def test_migrate_creates_the_schema_on_a_fresh_sqlite_database(tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    result = run_cli("migrate", "--database-url", f"sqlite:///{database}", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert KEYPLANE_TABLES | {"alembic_version"} <= sqlite_tables(database)

    again = run_cli("migrate", "--database-url", f"sqlite:///{database}", env={}, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.postgres
def test_migrate_creates_the_schema_on_a_fresh_postgres_schema(tmp_path: Path) -> None:
    with postgres_schema() as schema:
        env = {"KEYPLANE_DATABASE_SCHEMA": schema}
        result = run_cli("migrate", "--database-url", PG_URL, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert KEYPLANE_TABLES | {"alembic_version"} <= postgres_tables(schema)


@pytest.mark.postgres
def test_migrate_creates_a_missing_postgres_schema(tmp_path: Path) -> None:
    require_postgres()
    schema = f"kp_e2e_{secrets.token_hex(6)}"
    try:
        env = {"KEYPLANE_DATABASE_SCHEMA": schema}
        result = run_cli("migrate", "--database-url", PG_URL, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert KEYPLANE_TABLES | {"alembic_version"} <= postgres_tables(schema)
    finally:
        asyncio.run(pg_execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def test_migrate_reports_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    result = run_cli("migrate", "--database-url", url, env={}, cwd=tmp_path)
    assert_one_clean_line(result, "error")


def test_serve_reports_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "KEYPLANE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
        "KEYPLANE_SECRET": SERVER_SECRET,
        "KEYPLANE_PORT": str(free_port()),
    }
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert_one_clean_line(result, "cannot reach the database")
    assert result.returncode == 3  # docs/configuration.md: serve cannot reach the database


def test_version_prints_the_version(tmp_path: Path) -> None:
    result = run_cli("version", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


# -- invalid configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        pytest.param({"KEYPLANE_PORT": "notanumber"}, ["port"], id="port-not-a-number"),
        pytest.param({"KEYPLANE_PORT": "70000"}, ["port"], id="port-out-of-range"),
        pytest.param({"KEYPLANE_LOG_LEVEL": "loud"}, ["log_level"], id="unknown-log-level"),
        pytest.param(
            {"KEYPLANE_DATABASE_URL": PG_URL, "KEYPLANE_SECRET": None},
            ["KEYPLANE_SECRET is required"],
            id="postgres-without-secret",
        ),
        pytest.param({"KEYPLANE_SECRET": "too-short"}, ["KEYPLANE_SECRET"], id="short-secret"),
        pytest.param({"KEYPLANE_ROOT_KEY": "short"}, ["KEYPLANE_ROOT_KEY"], id="short-root-key"),
        pytest.param(
            {"KEYPLANE_DATABASE_URL": "mysql://db/keyplane"}, ["mysql"], id="unsupported-scheme"
        ),
        pytest.param(
            {"KEYPLANE_DATABASE_SCHEMA": "Not-A-Schema"},
            ["database_schema", "[a-z_][a-z0-9_]"],
            id="bad-schema-name",
        ),
    ],
)
def test_serve_with_invalid_settings_fails_with_one_clear_line(
    tmp_path: Path, env: dict[str, str | None], fragments: list[str]
) -> None:
    base: dict[str, str | None] = {
        "KEYPLANE_DATABASE_URL": f"sqlite:///{tmp_path / 'keyplane.db'}",
        "KEYPLANE_SECRET": SERVER_SECRET,
        "KEYPLANE_ROOT_KEY": ROOT_KEY,
        "KEYPLANE_HOST": "127.0.0.1",
        "KEYPLANE_PORT": str(free_port()),
    }
    result = run_cli("serve", env={**base, **env}, cwd=tmp_path)
    assert_one_clean_line(result, *fragments)
    assert result.stdout == ""


def test_serve_with_an_invalid_port_option_fails_without_traceback(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "notanumber", env={}, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "--port" in result.stderr


def test_serve_with_an_unusable_database_path_fails_with_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env: dict[str, str | None] = {
        "KEYPLANE_DATABASE_URL": f"sqlite:///{blocker / 'keyplane.db'}",
        "KEYPLANE_ROOT_KEY": ROOT_KEY,
        "KEYPLANE_PORT": str(free_port()),
    }
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert_one_clean_line(result, "not-a-directory")
