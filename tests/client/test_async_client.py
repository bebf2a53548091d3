"""Every AsyncClient method against the real app (in-process ASGI), on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from keyplane.client import (
    AsyncClient,
    AuthenticationError,
    ConflictError,
    KeyCreated,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
    Verdict,
)
from tests.conftest import Api


async def test_health_and_ready(sdk: AsyncClient) -> None:
    assert (await sdk.health()).status == "ok"
    assert (await sdk.ready()).status == "ready"


async def test_key_lifecycle(sdk: AsyncClient) -> None:
    created = await sdk.keys.create(
        "acme prod",
        owner="cust_42",
        tags=["prod"],
        metadata={"billing": {"tier": "pro"}},
        scopes=["chat"],
        expires_at="2030-01-31T00:00:00Z",
        policy={"budget": {"credit_limit": "12.5", "reset": "monthly"}},
    )
    assert isinstance(created, KeyCreated)
    assert created.key.startswith("kp_live_") and not created.replayed
    assert created.key not in repr(created)  # a logged object does not leak the secret
    key = created.data
    assert (key.name, key.owner, key.status, key.tags) == (
        "acme prod",
        "cust_42",
        "active",
        ["prod"],
    )
    assert key.limit == Decimal("12.5") and key.usage.total == Decimal(0)

    assert (await sdk.keys.get(key.id)).id == key.id
    assert (await sdk.keys.get(key.hash)).id == key.id

    updated = await sdk.keys.update(key.id, label="renamed", tags=["prod", "eu"], owner=None)
    assert (updated.label, updated.tags, updated.owner) == ("renamed", ["prod", "eu"], None)

    disabled = await sdk.keys.disable(key.id, reason="unpaid", auto_enable_after=3600)
    assert (disabled.status, disabled.disabled_reason) == ("disabled", "unpaid")
    assert (await sdk.verify(created.key)).code == "DISABLED"
    assert (await sdk.keys.enable(key.id)).status == "active"

    rotated = await sdk.keys.rotate(key.id, grace_period_seconds=0)
    assert rotated.data.id == key.id and rotated.key != created.key
    assert (await sdk.verify(created.key)).code == "NOT_FOUND"
    assert (await sdk.verify(rotated.key)).valid

    revoked = await sdk.keys.revoke(key.id, reason="left")
    assert (revoked.status, revoked.revoked_reason) == ("revoked", "left")
    assert (await sdk.verify(rotated.key)).code == "REVOKED"


async def test_list_filters_and_iterates_every_page(sdk: AsyncClient) -> None:
    for n in range(5):
        await sdk.keys.create(f"k{n}", owner="a" if n % 2 else "b", metadata={"n": str(n)})
    page = await sdk.keys.list(limit=2)
    assert len(page.data) == 2 and page.has_more and page.next_cursor == page.data[-1].id
    rest = await sdk.keys.list(limit=10, cursor=page.next_cursor)
    assert [k.name for k in rest.data] == ["k2", "k3", "k4"] and not rest.has_more
    assert [k.name async for k in sdk.keys.iterate(page_size=2)] == [f"k{n}" for n in range(5)]
    assert [k.name async for k in sdk.keys.iterate(page_size=1, owner="a")] == ["k1", "k3"]
    assert [k.name async for k in sdk.keys.iterate(metadata={"n": "4"})] == ["k4"]


async def test_verify_with_every_argument(sdk: AsyncClient) -> None:
    created = await sdk.keys.create(
        "gateway",
        scopes=["chat"],
        policy={
            "models": {"allow": ["gpt-*"]},
            "budget": {"credit_limit": 1},
            "network": {"ip_allow": ["10.0.0.0/8"]},
            "features": {"allow": ["chat_completion"]},
            "operations": ["read"],
            "routing": {"allowed_providers": ["openai"]},
            "data_access": {"log_responses": False},
        },
    )
    verdict = await sdk.verify(
        created.key,
        model="gpt-4o",
        scopes=["chat"],
        ip="10.1.2.3",
        origin="https://app.example.com",
        referrer="https://app.example.com/x",
        user_agent="App/1.0",
        cost=Decimal("0.25"),
        tokens={"input": 10, "output": 20},
        acquire_concurrency=True,
        request_id="req-sdk-1",
        features=["chat_completion"],
        operation="read",
        provider="openai",
        wait_ms=0,
    )
    assert isinstance(verdict, Verdict)
    assert verdict.directives == {
        "data_access": {"log_responses": False},
        "routing": {"allowed_providers": ["openai"]},
    }
    assert (verdict.valid, verdict.code, verdict.key_id) == (True, "VALID", created.data.id)
    assert verdict.request_id == "req-sdk-1"
    budget = next(limit for limit in verdict.limits if limit.kind == "budget")
    assert budget.remaining == Decimal("0.75")
    assert (await sdk.verify(created.key, model="claude-3")).code == "FORBIDDEN_MODEL"
    assert (await sdk.verify(created.key, model="gpt-4o", ip="192.0.2.1")).code == "IP_NOT_ALLOWED"
    assert (
        await sdk.verify(created.key, model="gpt-4o", ip="10.0.0.1", scopes=["admin"])
    ).code == "INSUFFICIENT_SCOPE"
    assert (await sdk.verify("kp_live_nonsense")).code == "MALFORMED"
    for refused, code in (
        ({"features": ["vision"]}, "FEATURE_NOT_ALLOWED"),
        ({"operation": "write"}, "OPERATION_NOT_ALLOWED"),
        ({"provider": "anthropic"}, "PROVIDER_NOT_ALLOWED"),
    ):
        verdict = await sdk.verify(created.key, model="gpt-4o", ip="10.0.0.1", **refused)
        assert verdict.code == code


async def test_usage_reports_are_idempotent_and_events_iterate(sdk: AsyncClient) -> None:
    created = await sdk.keys.create(
        "metered", policy={"budget": {"credit_limit": 10, "alert_thresholds": [0.1, 0.2, 0.3]}}
    )
    key_id = created.data.id
    first = await sdk.usage.report(key_id=key_id, request_id="r1", cost=1.5, input_tokens=3)
    assert not first.duplicate and first.key_id == key_id
    again = await sdk.usage.report(key_id=key_id, request_id="r1", cost=1.5, input_tokens=3)
    assert again.duplicate and again.id == first.id
    await sdk.usage.report(key=created.key, cost="1.6", idempotency_key="own-key", model="m")
    assert (await sdk.keys.get(key_id)).usage.total == Decimal("3.1")
    with pytest.raises(ConflictError) as caught:
        await sdk.usage.report(key_id=key_id, cost=9, idempotency_key="own-key")
    assert caught.value.code == "IDEMPOTENCY_KEY_REUSED"

    page = await sdk.usage.events(key_id=key_id, limit=2)
    assert len(page.data) == 2 and page.has_more
    events = [e async for e in sdk.usage.iterate_events(key_id=key_id, page_size=1)]
    assert [e.payload["threshold"] for e in events] == [0.1, 0.2, 0.3]
    assert {e.type for e in events} == {"budget.threshold_crossed"}


async def test_plans_crud(sdk: AsyncClient) -> None:
    plan = await sdk.plans.create(
        "pro",
        description="Pro",
        policy={"rate_limits": [{"name": "rpm", "limit": 60, "period": "1m"}]},
    )
    assert (plan.name, plan.description) == ("pro", "Pro")
    assert [p.name for p in await sdk.plans.list()] == ["pro"]
    assert (await sdk.plans.get("pro")).id == plan.id
    assert (await sdk.plans.get(plan.id)).name == "pro"
    updated = await sdk.plans.update("pro", description="Pro tier", policy={"scopes": ["chat"]})
    assert updated.description == "Pro tier" and updated.policy == {"scopes": ["chat"]}
    key = await sdk.keys.create("on plan", plan="pro")
    assert key.data.plan == "pro"
    with pytest.raises(ConflictError) as caught:
        await sdk.plans.delete("pro")
    assert caught.value.code == "PLAN_IN_USE" and caught.value.status == 409
    await sdk.keys.update(key.data.id, plan=None)
    assert (await sdk.plans.delete("pro")).id == plan.id
    with pytest.raises(NotFoundError):
        await sdk.plans.get("pro")


async def test_management_keys_and_projects(sdk: AsyncClient, api: Api) -> None:
    project = await sdk.projects.create("eu", key_prefix="eu")
    assert project.key_prefix == "eu"
    assert project.id in [p.id for p in await sdk.projects.list()]
    assert (await sdk.projects.get(project.id)).name == "eu"

    made = await sdk.management_keys.create("reader", ["keys:read"], project_id=project.id)
    assert made.key.startswith("kp_mgmt_") and made.data.scopes == ["keys:read"]
    assert made.key not in repr(made)
    assert (await sdk.management_keys.get(made.data.id)).name == "reader"
    second = await sdk.management_keys.create("verifier", ["verify"])
    page = await sdk.management_keys.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    ids = [k.id async for k in sdk.management_keys.iterate(page_size=1)]
    assert made.data.id in ids and second.data.id in ids

    # The reader may read but not write, and sees only its own project.
    async with AsyncClient(
        "http://keyplane.test",
        made.key,
        transport=httpx.ASGITransport(app=api.app),  # type: ignore[arg-type]
        max_retries=0,
    ) as reader:
        assert (await reader.keys.list()).data == []
        with pytest.raises(PermissionDeniedError) as denied:
            await reader.keys.create("nope")
        assert denied.value.status == 403 and denied.value.code == "MISSING_SCOPE"

    revoked = await sdk.management_keys.revoke(made.data.id)
    assert revoked.revoked_at is not None
    async with AsyncClient(
        "http://keyplane.test",
        made.key,
        transport=httpx.ASGITransport(app=api.app),  # type: ignore[arg-type]
        max_retries=0,
    ) as gone:
        with pytest.raises(AuthenticationError) as caught:
            await gone.keys.list()
    assert caught.value.status == 401


async def test_errors_carry_status_code_detail_and_body(sdk: AsyncClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        await sdk.keys.get("key_" + "0" * 26)
    assert (missing.value.status, missing.value.code) == (404, "KEY_NOT_FOUND")
    assert isinstance(missing.value.body, dict) and missing.value.body["status"] == 404
    with pytest.raises(ValidationError) as invalid:
        await sdk.keys.create("x", environment="staging")
    assert invalid.value.status == 422 and invalid.value.code == "VALIDATION_FAILED"
    assert "environment" in invalid.value.detail
    # A hostile reference cannot escape its path segment.
    with pytest.raises(NotFoundError):
        await sdk.keys.get("../../healthz")


async def test_credits_keep_every_digit(sdk: AsyncClient) -> None:
    # 18 significant digits: a float (the SDK parsed JSON numbers as floats) made it 1e12.
    most = Decimal("999999999999.999999")
    created = await sdk.keys.create("big", policy={"budget": {"credit_limit": str(most)}})
    assert isinstance(created, KeyCreated)
    key = await sdk.keys.get(created.data.id)
    assert (key.limit, key.limit_remaining) == (most, most)
    assert key.usage.total == Decimal(0)
    [listed] = (await sdk.keys.list()).data
    assert listed.limit == most
    verdict = await sdk.verify(created.key, cost=Decimal("0.000001"))
    [budget] = [limit for limit in verdict.limits if limit.kind == "budget"]
    assert budget.remaining == most - Decimal("0.000001")
    assert isinstance(key.metadata, dict) and isinstance(key.effective_policy, dict)


async def test_analytics_methods(sdk: AsyncClient) -> None:
    created = await sdk.keys.create("analytics", owner="o-1")
    await sdk.usage.report(
        key_id=created.data.id, request_id="a1", cost="0.1", model="gpt-4", feature="chat"
    )
    report = await sdk.usage.key_analytics(created.data.id, period="24h")
    assert report["total_requests"] == 1 and report["total_cost"] == Decimal("0.1")
    assert report["features"][0]["name"] == "chat"
    top = await sdk.usage.analytics("owner", order_by="cost", owners=["o-1"])
    assert [row["owner"] for row in top["data"]] == ["o-1"]
    exported = await sdk.usage.export("ndjson", period="1d")
    assert created.data.id in exported.decode()
    with pytest.raises(ValidationError):
        await sdk.usage.analytics("nonsense")


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # the routes' own tests do both
async def test_approve_and_reject_pending_keys(sdk: AsyncClient, api: Api) -> None:
    approver_key = await api.management_key("keys:approve", "keys:read")
    pending = await sdk.keys.create("pending", policy={"require_approval": True})
    withdrawn = await sdk.keys.create("withdrawn", policy={"require_approval": True})
    assert pending.data.status == withdrawn.data.status == "pending"
    async with AsyncClient(
        "http://keyplane.test",
        approver_key,
        transport=httpx.ASGITransport(app=api.app),  # type: ignore[arg-type]
        max_retries=0,
    ) as approver:
        assert (await approver.keys.approve(pending.data.id)).status == "active"
    rejected = await sdk.keys.reject(withdrawn.data.id, reason="not needed")
    assert (rejected.status, rejected.revoked_reason) == ("revoked", "not needed")
    assert (await sdk.verify(pending.key)).code == "VALID"
