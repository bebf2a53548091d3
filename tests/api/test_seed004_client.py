"""Seed 004's Python, as written, against ``/parrotrouter/v1`` (only base URL and key changed).

The seed's ``requests`` calls go to the app in process: a ``requests`` session whose
transport adapter hands each request to the ASGI app (its lifespan running on an event loop
in a portal thread; real SQLite/PostgreSQL). The clock stands in January 2024, where the
seed's dates live.

Each example is its own test, named after the feature it needs. Some need native policy
fields that other parts of issue 16 add (``features``, ``signing``, ``costs``, ``rotation``,
...): those fail with a 422 naming the missing native field until those parts are merged.
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import anyio.from_thread
import httpx
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette's test client would rather have httpx2; httpx is what this project uses.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from tests.api import seed004_parrotrouter as seed
from tests.conftest import PG_URL, ROOT_KEY, Database, _sqlite_threads, postgres_schema

SEED_BASE = "https://api.parrotrouter.com/v1"
BASE = "http://keyplane.test/parrotrouter/v1"
WS_BASE = "ws://keyplane.test/parrotrouter/v1"
NOW = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)


class AppClient:
    """A blocking client of the app, which runs on the portal's event loop."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: httpx.AsyncClient):
        self._portal = portal
        self._client = client

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        return self._portal.call(lambda: self._client.request(method, url, **options))

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def patch(self, url: str, **options: Any) -> httpx.Response:
        return self.request("PATCH", url, **options)


class AppAdapter(BaseAdapter):
    """A ``requests`` transport that serves every request from the ASGI app, in process."""

    def __init__(self, client: AppClient) -> None:
        super().__init__()
        self._client = client

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:  # type: ignore[override]
        answer = self._client.request(
            str(request.method),
            str(request.url),
            headers=dict(request.headers),
            content=request.body,
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(answer.headers)
        response._content = answer.content
        response.encoding = "utf-8"
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


class Seed:
    """Runs seed examples; ``printed`` holds what they print."""

    def __init__(self, client: AppClient) -> None:
        self.client = client
        self.session = requests.Session()
        self.session.mount("http://keyplane.test/", AppAdapter(client))
        self.printed: list[str] = []

    def run(self, *examples: str, **names: Any) -> dict[str, Any]:
        code = "\n".join(examples)
        code = code.replace(SEED_BASE, BASE)
        code = code.replace("your-master-key", ROOT_KEY).replace("your-admin-key", ROOT_KEY)
        code = code.replace("import requests\n", "")
        scope: dict[str, Any] = {
            "requests": self.session,
            "print": lambda *parts: self.printed.append(" ".join(map(str, parts))),
            **names,
        }
        with warnings.catch_warnings():
            # The seed writes "^YourApp/\d+\.\d+" in a plain string: Python warns (a
            # DeprecationWarning before 3.12, a SyntaxWarning since) and keeps the backslashes.
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            compiled = compile(code, "seed004", "exec")
        exec(compiled, scope)  # noqa: S102 - the seed's own code, from this repository
        return scope

    def native_key(self) -> str:
        """A key made through the native API (for the examples that start from a key_id)."""
        response = self.client.post("/v1/keys", json={"name": "seed 004 key"})
        assert response.status_code == 201, response.text
        key_id: str = response.json()["data"]["id"]
        return key_id


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def seed_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """One database per backend for the whole module: every example works on keys of its
    own, so they share it, and the app starts once per backend (the suite's time budget)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("seed004") / "keyplane.db"
        yield Database("sqlite", f"sqlite:///{path}")
        return
    with postgres_schema() as schema:
        yield Database("postgres", PG_URL, schema)


def _sqlite_leak_check(before: set[Any]) -> None:
    gc.collect()
    deadline = time.monotonic() + 5
    while (leaked := set(_sqlite_threads()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"{len(leaked)} SQLite connection(s) left open"


@pytest.fixture(autouse=True)
def no_leaked_sqlite_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    """The conftest check, except for the examples on the module's app: its connections live
    as long as it does, and are checked closed when it stops (``app_client``)."""
    if "app_client" in request.fixturenames:
        yield
        return
    before = set(_sqlite_threads())
    yield
    _sqlite_leak_check(before)


@pytest.fixture(scope="module")
def app_client(seed_database: Database) -> Iterator[AppClient]:
    before = set(_sqlite_threads())
    yield from _serve(seed_database)
    _sqlite_leak_check(before)


def _serve(seed_database: Database) -> Iterator[AppClient]:
    app = create_app(seed_database.settings(), clock=ManualClock(NOW))
    headers = {"Authorization": f"Bearer {ROOT_KEY}"}
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
    ):
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers=headers,
        )
        try:
            yield AppClient(portal, client)
        finally:
            portal.call(client.aclose)


@pytest.fixture
def seed_client(app_client: AppClient) -> Seed:
    return Seed(app_client)


def created(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["key"].startswith("kp_") and body["id"].startswith("key_")
    return body


def native_policy(seed: Seed, key_id: str) -> dict[str, Any]:
    response = seed.client.get(f"/v1/keys/{key_id}")
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()["data"]["policy"]
    return policy


# --- Examples that run on every Keyplane of this foundations ---


def test_seed004_manual_rotation(seed_client: Seed) -> None:
    key_id = seed_client.native_key()
    scope = seed_client.run(seed.MANUAL_ROTATION, key_id=key_id)
    assert scope["response"].status_code == 200, scope["response"].text
    new_key = scope["new_key"]
    assert new_key["id"] == key_id and new_key["key"].startswith("kp_live_")
    assert new_key["old_key_expires_at"] == "2024-01-17T09:30:00Z"  # 48 hours of overlap
    assert seed_client.printed == [
        f"New key: {new_key['key']}",
        "Old key expires: 2024-01-17T09:30:00Z",
    ]


def test_seed004_key_lifecycle_update_disable_revoke(seed_client: Seed) -> None:
    key_id = seed_client.native_key()
    seed_client.client.patch(
        f"/v1/keys/{key_id}",
        json={"policy": {"rate_limits": [{"name": "per_minute", "limit": 100, "period": "1m"}]}},
    )
    scope = seed_client.run(seed.UPDATE_KEY, key_id=key_id)
    assert scope["response"].status_code == 200, scope["response"].text
    assert scope["response"].json()["expires_at"] == "2024-06-30T23:59:59Z"
    # Only the day's limit changed: the minute window the key had stays.
    assert native_policy(seed_client, key_id)["rate_limits"] == [
        {"name": "per_minute", "limit": 100, "period": "1m"},
        {"name": "per_day", "limit": 5000, "period": "1d"},
    ]

    scope = seed_client.run(seed.DISABLE_KEY, key_id=key_id)
    assert scope["response"].status_code == 200, scope["response"].text
    disabled = scope["response"].json()
    assert disabled["status"] == "disabled"
    assert disabled["disabled_reason"] == "Suspicious activity detected"
    assert disabled["auto_enable_at"] == "2024-01-15T10:30:00Z"

    scope = seed_client.run(seed.REVOKE_KEY, key_id=key_id)
    assert scope["response"].status_code == 200, scope["response"].text
    assert scope["response"].json()["status"] == "revoked"
    assert scope["response"].json()["revoked_reason"] == "Key compromised"


def test_seed004_team_key_is_refused_naming_teams(seed_client: Seed) -> None:
    scope = seed_client.run(seed.TEAM_KEY)
    answer = scope["team_key"]
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "TEAMS_NOT_AVAILABLE"
    assert "teams" in problem["detail"] and "members" in problem["detail"]
    listed = seed_client.client.get("/v1/keys", params={"name": "Team"}).json()["data"]
    names = [key["name"] for key in listed]
    assert "Frontend Team Key" not in names  # nothing was created


def test_seed004_analytics(seed_client: Seed) -> None:
    key_id = seed_client.native_key()
    secret = seed_client.client.post(f"/v1/keys/{key_id}/rotate").json()["key"]
    verdict = seed_client.client.post(
        "/v1/verify", json={"key": secret, "model": "gpt-3.5-turbo"}
    ).json()
    assert verdict["valid"] is True, verdict
    usage = seed_client.client.post(
        "/v1/usage",
        json={
            "key_id": key_id,
            "request_id": "req-1",
            "model": "gpt-3.5-turbo",
            "cost": 0.25,
            "latency_ms": 120,
        },
    )
    assert usage.status_code == 201, usage.text
    scope = seed_client.run(seed.ANALYTICS, key_id=key_id)
    analytics = scope["analytics"]
    assert analytics["total_requests"] == 1 and analytics["total_cost"] == 0.25
    assert seed_client.printed[:4] == [
        "Total requests: 1",
        "Total cost: $0.25",
        "Average latency: 120.0ms",
        "Error rate: 0.0%",
    ]
    assert " gpt-3.5-turbo: 1 requests, $0.25" in seed_client.printed
    assert "\nFeature Usage:" in seed_client.printed


def test_seed004_audit_logs_and_export(seed_client: Seed) -> None:
    key_id = seed_client.native_key()
    seed_client.run(seed.UPDATE_KEY, key_id=key_id)  # a permission change
    seed_client.run(seed.DISABLE_KEY, key_id=key_id)  # a security event
    scope = seed_client.run(seed.AUDIT_LOGS, key_id=key_id)
    events = scope["audit_logs"]["events"]
    assert [e["event_type"] for e in events] == ["security_alert", "permission_change"]
    assert [e["action"] for e in events] == ["key.disabled", "key.updated"]
    assert events[0]["user_id"] == "root" and events[0]["timestamp"].startswith("2024-01-15")
    assert "\n2024-01-15T09:30:00Z: permission_change" in seed_client.printed

    scope = seed_client.run(seed.EXPORT_AUDIT, key_id=key_id)
    export = scope["export"]
    assert export.status_code == 200, export.text
    assert export.headers["content-type"].startswith("text/csv")
    # last_quarter is Q4 2023, before the key existed: the header row only.
    assert export.text.splitlines()[0].startswith("id,")
    assert len(export.text.splitlines()) == 1


# --- Examples that need the native fields other parts of issue 16 add ---


def test_seed004_create_key_features_operations_domains(seed_client: Seed) -> None:
    """Needs ``policy.features``/``operations`` (perm) and ``network.domains``/``user_agents``
    (sign)."""
    scope = seed_client.run(seed.CREATE_KEY)
    key_data = created(scope["response"])
    assert key_data["created_at"] == "2024-01-15T09:30:00Z"
    assert seed_client.printed == [
        f"API Key: {key_data['key']}",
        f"Key ID: {key_data['id']}",
        "Created: 2024-01-15T09:30:00Z",
    ]
    policy = native_policy(seed_client, key_data["id"])
    assert policy["features"] == {"allow": ["chat_completion", "embeddings", "structured_outputs"]}
    assert policy["operations"] == ["read", "write"]
    assert policy["network"]["domains"] == ["app.yourcompany.com", "*.yourcompany.com"]
    assert policy["budget"] == {"credit_limit": 50, "reset": "daily"}


def test_seed004_model_permissions_cost_limits_routing(seed_client: Seed) -> None:
    """Needs ``models.cost_limits`` (cost) and ``routing`` (perm)."""
    scope = seed_client.run(seed.MODEL_PERMISSIONS, seed.SEND_PERMISSIONS)
    key_data = created(scope["response"])
    policy = native_policy(seed_client, key_data["id"])
    assert policy["models"]["deny"] == ["gpt-4-vision-preview", "dall-e-*"]
    assert policy["routing"]["allowed_providers"] == ["openai", "anthropic"]


def test_seed004_feature_permissions(seed_client: Seed) -> None:
    """Needs ``features``, ``advanced_features`` and ``data_access`` (perm)."""
    scope = seed_client.run(seed.FEATURE_PERMISSIONS, seed.SEND_PERMISSIONS)
    key_data = created(scope["response"])
    policy = native_policy(seed_client, key_data["id"])
    assert "function_calling" in policy["features"]["deny"]
    assert policy["data_access"]["log_responses"] is False


def test_seed004_rate_limits_costs_queued(seed_client: Seed) -> None:
    """Needs ``costs`` (cost) and ``concurrency.max_queued`` (perm)."""
    scope = seed_client.run(seed.RATE_LIMITS, seed.SEND_RATE_LIMITS)
    key_data = created(scope["response"])
    policy = native_policy(seed_client, key_data["id"])
    assert policy["rate_limits"][0] == {
        "name": "per_second",
        "limit": 10,
        "period": "1s",
        "burst": 20,
    }
    assert policy["concurrency"] == {"max_parallel": 5, "max_queued": 20}


def test_seed004_security_config(seed_client: Seed) -> None:
    """Needs ``signing``, ``network.require_https/countries_deny/domains`` (sign) and
    ``data_access`` (perm)."""
    scope = seed_client.run(seed.SECURITY_CONFIG)
    key_data = created(scope["response"])
    policy = native_policy(seed_client, key_data["id"])
    assert policy["network"]["countries_deny"] == ["XX", "YY"]
    assert policy["signing"]["required"] is True


def test_seed004_automatic_rotation(seed_client: Seed) -> None:
    """Needs ``policy.rotation`` (jobs)."""
    key_id = seed_client.native_key()
    scope = seed_client.run(seed.AUTOMATIC_ROTATION, key_id=key_id)
    assert scope["response"].status_code == 200, scope["response"].text
    assert scope["response"].json()["rotation"]["schedule"] == "0 0 1 * *"


def test_seed004_environment_keys_require_approval(seed_client: Seed) -> None:
    """Needs ``require_approval`` (perm) for the production key."""
    scope = seed_client.run(seed.ENVIRONMENT_KEYS)
    assert scope["response"].status_code == 201, scope["response"].text  # production, last
    keys = seed_client.client.get("/v1/keys", params={"name": "Environment Key"}).json()["data"]
    assert [(k["environment"], k["tags"]) for k in keys] == [
        ("test", ["environment:development"]),
        ("test", ["environment:staging"]),
        ("live", ["environment:production"]),
    ]


class SocketApp:
    """``websocket.WebSocketApp`` as the seed uses it, over Starlette's in-process socket:
    ``run_forever`` connects, lets the test report usage, and hands one message over."""

    def __init__(self, client: TestClient, on_open: Callable[[], None]) -> None:
        self._client = client
        self._on_open = on_open

    def __call__(
        self, url: str, header: list[str], on_message: Callable[[Any, str], None]
    ) -> SocketApp:
        self.url, self.header, self.on_message = url, header, on_message
        return self

    def run_forever(self) -> None:
        headers = dict(line.split(": ", 1) for line in self.header)
        path = self.url.removeprefix("ws://keyplane.test")
        with self._client.websocket_connect(path, headers=headers) as socket:
            self._on_open()
            self.on_message(self, socket.receive_text())


def test_seed004_realtime_monitoring_websocket(sqlite_database: Database) -> None:
    app = create_app(sqlite_database.settings(), clock=ManualClock(NOW))
    headers = {"Authorization": f"Bearer {ROOT_KEY}"}
    with TestClient(app, base_url="http://keyplane.test", headers=headers) as client:
        key_id = client.post("/v1/keys", json={"name": "streamed"}).json()["data"]["id"]

        def report() -> None:
            body = {"key_id": key_id, "request_id": "r1", "cost": 1.5, "model": "gpt-4o"}
            assert client.post("/v1/usage", json=body).status_code == 201

        printed: list[str] = []
        code = seed.REALTIME_MONITORING.replace("wss://api.parrotrouter.com/v1", WS_BASE)
        code = code.replace("your-master-key", ROOT_KEY).replace("import websocket\n", "")
        websocket = SimpleNamespace(WebSocketApp=SocketApp(client, report))
        scope = {"websocket": websocket, "json": json, "key_id": key_id, "print": printed.append}
        exec(compile(code, "seed004", "exec"), scope)  # noqa: S102 - the seed's own code
    assert printed == ["High cost request: $1.5 for gpt-4o"]
