"""Every sync Client method against a real ``keyplane serve`` (one per module and backend)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from decimal import Decimal

import pytest

from keyplane.client import (
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from tests.conftest import ROOT_KEY
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(live_server: Server) -> Iterator[Client]:
    with Client(live_server.base_url, ROOT_KEY, max_retries=0) as sdk:
        yield sdk


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_health_ready_and_verify(client: Client) -> None:
    assert client.health().status == "ok"
    assert client.ready().status == "ready"
    created = client.keys.create(
        unique("verify"), scopes=["chat"], policy={"budget": {"credit_limit": 2}}
    )
    verdict = client.verify(
        created.key, scopes=["chat"], cost=0.5, tokens={"input": 1}, request_id=unique("req")
    )
    assert verdict.valid and verdict.key_id == created.data.id
    assert next(x for x in verdict.limits if x.kind == "budget").remaining == Decimal("1.5")
    assert client.verify(created.key, scopes=["admin"]).code == "INSUFFICIENT_SCOPE"


def test_key_lifecycle(client: Client) -> None:
    owner = unique("owner")
    created = client.keys.create(unique("life"), owner=owner, environment="test")
    assert created.key.startswith("kp_test_")
    key_id = created.data.id
    assert client.keys.get(key_id).owner == owner
    assert client.keys.get(created.data.hash).id == key_id
    assert client.keys.update(key_id, description="d", metadata={"a": 1}).metadata == {"a": 1}
    assert client.keys.disable(key_id, reason="pause").status == "disabled"
    assert client.keys.enable(key_id).status == "active"
    rotated = client.keys.rotate(key_id, grace_period_seconds=60)
    assert rotated.data.id == key_id
    assert client.verify(created.key).valid  # still inside its grace period
    assert client.keys.revoke(key_id, reason="done").status == "revoked"
    assert client.verify(rotated.key).code == "REVOKED"


def test_list_and_iterate(client: Client) -> None:
    owner = unique("pages")
    made = [client.keys.create(f"p{n}", owner=owner).data.id for n in range(3)]
    page = client.keys.list(owner=owner, limit=2)
    assert [k.id for k in page.data] == made[:2] and page.has_more
    assert [k.id for k in client.keys.iterate(owner=owner, page_size=1)] == made


def test_usage_and_events(client: Client) -> None:
    created = client.keys.create(
        unique("usage"), policy={"budget": {"credit_limit": 1, "alert_thresholds": [0.5]}}
    )
    request_id = unique("r")
    recorded = client.usage.report(key_id=created.data.id, request_id=request_id, cost="0.6")
    assert not recorded.duplicate
    assert client.usage.report(key_id=created.data.id, request_id=request_id, cost="0.6").duplicate
    events = list(client.usage.iterate_events(key_id=created.data.id))
    assert [e.type for e in events] == ["budget.threshold_crossed"]
    assert client.usage.events(key_id=created.data.id, limit=1).data[0].id == events[0].id


def test_plans(client: Client) -> None:
    name = unique("plan")
    plan = client.plans.create(name, description="x", policy={"scopes": ["chat"]})
    assert name in [p.name for p in client.plans.list()]
    assert client.plans.get(plan.id).name == name
    assert client.plans.update(name, description="y").description == "y"
    key = client.keys.create(unique("on-plan"), plan=name)
    with pytest.raises(ConflictError):
        client.plans.delete(name)
    client.keys.update(key.data.id, plan=None)
    assert client.plans.delete(name).id == plan.id
    with pytest.raises(NotFoundError):
        client.plans.get(name)


def test_signing_secrets(client: Client) -> None:
    from keyplane.webhooks import verify

    created = client.signing_secrets.create(unique("owner"))
    signature = client.signing_secrets.sign(created.data.id, "body")
    verify("body", signature.headers, created.secret, now=signature.timestamp)
    rotated = client.signing_secrets.rotate(created.data.id, overlap_seconds=0)
    again = client.signing_secrets.sign(created.data.id, "body")
    verify("body", again.headers, rotated.secret, now=again.timestamp)
    assert created.data.id in [s.id for s in client.signing_secrets.list().data]
    assert client.signing_secrets.get(created.data.id).rotated_at is not None
    assert client.signing_secrets.delete(created.data.id).id == created.data.id


def test_management_keys_projects_and_errors(client: Client, live_server: Server) -> None:
    project = client.projects.create(unique("proj"))
    assert client.projects.get(project.id).id == project.id
    assert project.id in [p.id for p in client.projects.list()]
    made = client.management_keys.create("ro", ["keys:read"], project_id=project.id)
    assert client.management_keys.get(made.data.id).project_id == project.id
    assert made.data.id in [k.id for k in client.management_keys.iterate(page_size=1)]
    assert client.management_keys.list(limit=1).data
    with Client(live_server.base_url, made.key, max_retries=0) as reader:
        with pytest.raises(PermissionDeniedError):
            reader.keys.create("no")
        client.management_keys.revoke(made.data.id)
        with pytest.raises(AuthenticationError):
            reader.keys.list()
    with pytest.raises(ValidationError) as invalid:
        client.keys.create("x", tags=["ok"] * 2, expires_at="yesterday")
    assert invalid.value.status == 422
