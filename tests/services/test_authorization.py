"""Authorization lives in the services: every use case refuses a caller without its scope, and
never reaches across tenants, whoever calls it (no HTTP here: the routes' early refusals are
not what these tests lean on)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from keyplane.domain.clock import ManualClock
from keyplane.domain.decisions import Code
from keyplane.domain.leaks import LeakAction
from keyplane.domain.security_report import Thresholds
from keyplane.domain.tenancy import MANAGEMENT_SCOPES, Principal
from keyplane.errors import NotFoundError, PermissionDeniedError
from keyplane.metrics import VERIFY
from keyplane.services.analytics import Query
from keyplane.services.audit_read import AuditQuery
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime, Services
from keyplane.services.usage import UsageReport
from keyplane.services.vault import LeaseRequest, NewCredential
from keyplane.services.verify import VerifyRequest
from keyplane.services.webhooks import NewEndpoint
from keyplane.store.base import KeyFilter
from keyplane.store.vault import CredentialFilter
from tests.conftest import Database

KEY_ID = "key_00000000000000000000000000"
UseCase = Callable[[Services, Principal], Awaitable[Any]]

#: Every use case a management caller can invoke, with the scope it needs.
USE_CASES: list[tuple[str, str, UseCase]] = [
    ("keys.create", "keys:write", lambda s, p: s.keys.create(p, NewKey(name="k"))),
    ("keys.get", "keys:read", lambda s, p: s.keys.get(p, KEY_ID)),
    ("keys.list", "keys:read", lambda s, p: s.keys.list(p, KeyFilter(), None, 10)),
    ("keys.update", "keys:write", lambda s, p: s.keys.update(p, KEY_ID, {"name": "n"})),
    ("keys.revoke", "keys:write", lambda s, p: s.keys.revoke(p, KEY_ID, None)),
    ("keys.disable", "keys:write", lambda s, p: s.keys.disable(p, KEY_ID, None, None)),
    ("keys.enable", "keys:write", lambda s, p: s.keys.enable(p, KEY_ID)),
    ("keys.approve", "keys:approve", lambda s, p: s.keys.approve(p, KEY_ID)),
    ("keys.reject", "keys:approve", lambda s, p: s.keys.reject(p, KEY_ID, None)),
    ("keys.rotate", "keys:write", lambda s, p: s.keys.rotate(p, KEY_ID, timedelta(0))),
    ("key_limits.reset", "keys:write", lambda s, p: s.key_limits.reset(p, KEY_ID)),
    (
        "key_limits.adjust_credits",
        "keys:credits",
        lambda s, p: s.key_limits.adjust_credits(p, KEY_ID, 1, "r"),
    ),
    (
        "management.create",
        "management_keys:write",
        lambda s, p: s.management.create(p, "m", ("keys:read",), None),
    ),
    ("management.list", "management_keys:read", lambda s, p: s.management.list(p, None, 10)),
    ("management.get", "management_keys:read", lambda s, p: s.management.get(p, "mk_x")),
    ("management.revoke", "management_keys:write", lambda s, p: s.management.revoke(p, "mk_x")),
    ("projects.create", "projects:write", lambda s, p: s.projects.create(p, "p", "pp")),
    ("projects.get", "projects:read", lambda s, p: s.projects.get(p, "proj_x")),
    ("projects.list", "projects:read", lambda s, p: s.projects.list(p)),
    ("projects.aliases", "projects:read", lambda s, p: s.projects.aliases(p)),
    ("projects.add_alias", "projects:write", lambda s, p: s.projects.add_alias(p, "fr-org")),
    ("projects.remove_alias", "projects:write", lambda s, p: s.projects.remove_alias(p, "fr-org")),
    ("plans.create", "plans:write", lambda s, p: s.plans.create(p, "plan", None, {})),
    ("plans.get", "plans:read", lambda s, p: s.plans.get(p, "plan")),
    ("plans.list", "plans:read", lambda s, p: s.plans.list(p)),
    ("plans.update", "plans:write", lambda s, p: s.plans.update(p, "plan", {})),
    ("plans.delete", "plans:write", lambda s, p: s.plans.delete(p, "plan")),
    (
        "usage.report",
        "usage:write",
        lambda s, p: s.usage.report(p, UsageReport(key_id=KEY_ID, request_id="r"), None),
    ),
    ("events.list", "usage:read", lambda s, p: s.events.list(p, None, None, 10)),
    (
        "verify",
        "verify",
        lambda s, p: s.verifier.verify(p, VerifyRequest(key="kp_live_" + "x" * 40)),
    ),
    (
        "vault.add",
        "vault:write",
        lambda s, p: s.vault.add(p, NewCredential(provider="openai", alias="a", secret="sk-1")),
    ),
    (
        "vault.add_many",
        "vault:write",
        lambda s, p: s.vault.add_many(p, [NewCredential(provider="openai", alias="a", secret="x")]),
    ),
    ("vault.get", "vault:read", lambda s, p: s.vault.get(p, "cred_x")),
    ("vault.reveal", "vault:reveal", lambda s, p: s.vault.reveal(p, "cred_x")),
    ("vault.list", "vault:read", lambda s, p: s.vault.list(p, CredentialFilter(), None, 10)),
    ("vault.update", "vault:write", lambda s, p: s.vault.update(p, "cred_x", {"weight": 2})),
    ("vault.delete", "vault:write", lambda s, p: s.vault.delete(p, "cred_x")),
    ("vault.provider_stats", "vault:read", lambda s, p: s.vault.provider_stats(p, "openai")),
    ("vault.lease", "vault:lease", lambda s, p: s.vault.lease(p, LeaseRequest("openai"))),
    ("vault.release", "vault:lease", lambda s, p: s.vault.release(p, "lease_x")),
    (
        "analytics.key_report",
        "usage:read",
        lambda s, p: s.analytics.key_report(p, KEY_ID, "24h", "hour"),
    ),
    ("analytics.grouped", "usage:read", lambda s, p: s.analytics.grouped(p, Query("key"))),
    (
        "analytics.usage_of_keys",
        "usage:read",
        lambda s, p: s.analytics.usage_of_keys(p, [KEY_ID], "24h"),
    ),
    ("analytics.export", "usage:read", lambda s, p: s.analytics.export(p, "24h", "hour", None)),
    ("streams.subscribe", "usage:read", lambda s, p: s.streams.subscribe(p)),
    (
        "signing_secrets.create",
        "signing_secrets:write",
        lambda s, p: s.signing_secrets.create(p, "o"),
    ),
    ("signing_secrets.get", "signing_secrets:read", lambda s, p: s.signing_secrets.get(p, "ss_x")),
    ("signing_secrets.list", "signing_secrets:read", lambda s, p: s.signing_secrets.list(p)),
    (
        "signing_secrets.rotate",
        "signing_secrets:write",
        lambda s, p: s.signing_secrets.rotate(p, "ss_x", timedelta(0)),
    ),
    (
        "signing_secrets.delete",
        "signing_secrets:write",
        lambda s, p: s.signing_secrets.delete(p, "ss_x"),
    ),
    (
        "signing_secrets.sign",
        "signing_secrets:write",
        lambda s, p: s.signing_secrets.sign(p, "ss_x", "{}"),
    ),
    (
        "webhooks.create",
        "webhooks:write",
        lambda s, p: s.webhooks.create(
            p, NewEndpoint(url="https://hooks.example.com/x", events=("key.*",))
        ),
    ),
    ("webhooks.list", "webhooks:read", lambda s, p: s.webhooks.list(p)),
    ("webhooks.get", "webhooks:read", lambda s, p: s.webhooks.get(p, "we_x")),
    (
        "webhooks.update",
        "webhooks:write",
        lambda s, p: s.webhooks.update(p, "we_x", {"enabled": False}),
    ),
    ("webhooks.delete", "webhooks:write", lambda s, p: s.webhooks.delete(p, "we_x")),
    ("webhooks.rotate_secret", "webhooks:write", lambda s, p: s.webhooks.rotate_secret(p, "we_x")),
    (
        "webhooks.deliveries",
        "webhooks:read",
        lambda s, p: s.webhooks.deliveries(p, "we_x", None, 10),
    ),
    ("webhooks.replay", "webhooks:write", lambda s, p: s.webhooks.replay(p, "we_x", "del_x")),
    ("webhooks.test", "webhooks:write", lambda s, p: s.webhooks.test(p, "we_x")),
    ("audit_read.list", "audit:read", lambda s, p: s.audit_read.list(p, AuditQuery(), None, 10)),
    ("audit_read.get", "audit:read", lambda s, p: s.audit_read.get(p, "aud_x")),
    (
        "audit_read.for_key",
        "audit:read",
        lambda s, p: s.audit_read.for_key(p, KEY_ID, AuditQuery(), None, 10),
    ),
    ("audit_read.export", "audit:read", lambda s, p: s.audit_read.export(p, AuditQuery(), "csv")),
    ("audit.verify", "audit:read", lambda s, p: s.audit.verify(p)),
    (
        "rotations.set_policy",
        "keys:write",
        lambda s, p: s.rotations.set_policy(p, KEY_ID, {"max_age_days": 30}),
    ),
    ("rotations.get_policy", "keys:read", lambda s, p: s.rotations.get_policy(p, KEY_ID)),
    (
        "rotations.set_plan_policy",
        "plans:write",
        lambda s, p: s.rotations.set_plan_policy(p, "plan", {"max_age_days": 30}),
    ),
    (
        "rotations.get_plan_policy",
        "plans:read",
        lambda s, p: s.rotations.get_plan_policy(p, "plan"),
    ),
    ("rotations.held", "keys:read", lambda s, p: s.rotations.held(p, KEY_ID)),
    ("rotations.claim", "keys:write", lambda s, p: s.rotations.claim(p, KEY_ID)),
    ("jobs.list_jobs", "jobs:read", lambda s, p: s.jobs.list_jobs(p)),
    (
        "security_reports.report",
        "reports:read",
        lambda s, p: s.security_reports.report(p, Thresholds()),
    ),
    ("leaks.action_for", "projects:read", lambda s, p: s.leaks.action_for(p, "proj_x")),
    (
        "leaks.set_action",
        "projects:write",
        lambda s, p: s.leaks.set_action(p, "proj_x", LeakAction.NOTIFY),
    ),
    ("leaks.operator_report", "keys:leaked", lambda s, p: s.leaks.operator_report(p, b"[]")),
]


@pytest.fixture
async def runtime(sqlite_database: Database, clock: ManualClock) -> AsyncIterator[Runtime]:
    runtime = await Runtime.start(sqlite_database.settings(), clock)
    try:
        yield runtime
    finally:
        await runtime.stop()


def caller(org_id: str, *scopes: str, project_id: str | None = None) -> Principal:
    return Principal("mk_caller", org_id, project_id, tuple(scopes))


@pytest.mark.parametrize(("name", "scope", "call"), USE_CASES, ids=[u[0] for u in USE_CASES])
async def test_a_use_case_refuses_a_caller_holding_every_scope_but_its_own(
    runtime: Runtime, name: str, scope: str, call: UseCase
) -> None:
    others = [s for s in MANAGEMENT_SCOPES if s != scope]
    with pytest.raises(PermissionDeniedError) as refused:
        await call(runtime.services, caller(runtime.default_project.org_id, *others))
    assert refused.value.code == "MISSING_SCOPE"


async def test_every_use_case_of_the_services_is_in_the_table() -> None:
    """A new use case must say which scope it needs (add it to USE_CASES)."""
    covered = {name for name, _scope, _call in USE_CASES}
    public = {
        f"{attr}.{method}" if attr != "verifier" else method
        for attr, service in (
            ("keys", "KeyService"),
            ("key_limits", "KeyLimits"),
            ("management", "ManagementKeys"),
            ("projects", "Projects"),
            ("plans", "Plans"),
            ("usage", "UsageService"),
            ("events", "Events"),
            ("verifier", "Verifier"),
            ("vault", "VaultService"),
            ("analytics", "Analytics"),
            ("streams", "UsageStreams"),
            ("signing_secrets", "SigningSecrets"),
            ("webhooks", "WebhookService"),
            ("audit_read", "AuditReader"),
            ("audit", "AuditService"),
            ("rotations", "Rotations"),
            ("jobs", "JobRunner"),
            ("security_reports", "SecurityReports"),
            ("leaks", "LeakResponse"),
        )
        for method in _principal_methods(service)
    }
    # Helpers that take a principal but are parts of a read the caller was allowed already.
    helpers = {
        "keys.views",
        "projects.names",
        "projects.named_in_request",
        # Checks the request's own org reference (FastRouter's org_id) against the caller.
        "projects.names_own_org",
    }
    assert public - helpers <= covered, sorted(public - helpers - covered)


def _principal_methods(class_name: str) -> list[str]:
    import inspect

    from keyplane.services import (
        analytics,
        audit,
        audit_read,
        events,
        jobs,
        key_limits,
        keys,
        leaks,
        management,
        plans,
        projects,
        rotation,
        security_reports,
        signing_secrets,
        usage,
        usage_stream,
        vault,
        verify,
        webhooks,
    )

    modules = (keys, management, projects, plans, usage, events, verify, vault)
    modules += (key_limits, analytics, usage_stream, signing_secrets, webhooks, audit_read, audit)
    modules += (rotation, jobs)
    modules += (security_reports, leaks)
    for module in modules:
        cls = getattr(module, class_name, None)
        if cls is not None:
            return [
                name
                for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
                if not name.startswith("_") and "principal" in inspect.signature(member).parameters
            ]
    raise AssertionError(class_name)


async def test_verify_refuses_a_caller_without_the_verify_scope_before_any_lookup(
    runtime: Runtime,
) -> None:
    """The verifier checks the scope itself: the route, the forward-auth gateway and
    InProcessVerifier are not the only callers (issue 11)."""
    root = caller(runtime.default_project.org_id, "*")
    issued = await runtime.services.keys.create(root, NewKey(name="k"))
    writer = caller(runtime.default_project.org_id, "keys:*", "usage:*")
    before = _verdicts_given(runtime)
    with pytest.raises(PermissionDeniedError):
        await runtime.services.verifier.verify(writer, VerifyRequest(key=issued.secret))
    assert _verdicts_given(runtime) == before  # refused, not decided
    verifier = caller(runtime.default_project.org_id, "verify")
    verdict = await runtime.services.verifier.verify(verifier, VerifyRequest(key=issued.secret))
    assert verdict.code is Code.VALID
    assert _verdicts_given(runtime) == before + 1


def _verdicts_given(runtime: Runtime) -> float:
    """Every verdict counted, read from the Prometheus counter (the runtime's sampler adds
    the verifier's own counts to it, as a scrape does)."""
    assert runtime.sampler is not None
    runtime.sampler.sample()
    return sum(
        sample.value
        for metric in VERIFY.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def test_use_cases_never_reach_another_organization(runtime: Runtime) -> None:
    org_id = runtime.default_project.org_id
    root = caller(org_id, "*")
    issued = await runtime.services.keys.create(root, NewKey(name="k"))
    stranger = caller("org_someone_else", "*")
    with pytest.raises(NotFoundError):
        await runtime.services.keys.get(stranger, issued.record.id)
    with pytest.raises(NotFoundError):
        await runtime.services.keys.revoke(stranger, issued.record.id, None)
    assert await runtime.services.keys.list(stranger, KeyFilter(), None, 10) == []
    verdict = await runtime.services.verifier.verify(stranger, VerifyRequest(key=issued.secret))
    assert verdict.code is Code.NOT_FOUND
    assert await runtime.services.events.list(stranger, None, None, 10) == []
    with pytest.raises(NotFoundError):
        await runtime.services.key_limits.reset(stranger, issued.record.id)
    with pytest.raises(NotFoundError):
        await runtime.services.key_limits.adjust_credits(stranger, issued.record.id, 1, "r")
    rotations = runtime.services.rotations
    with pytest.raises(NotFoundError):
        await rotations.set_policy(stranger, issued.record.id, {"max_age_days": 1})
    with pytest.raises(NotFoundError):
        await rotations.claim(stranger, issued.record.id)
    # The key is still there and valid for its own organization.
    assert (await runtime.services.keys.get(root, issued.record.id)).id == issued.record.id


async def test_a_project_bound_caller_does_not_reach_other_projects(runtime: Runtime) -> None:
    org_id = runtime.default_project.org_id
    root = caller(org_id, "*")
    other = await runtime.services.projects.create(root, "other", "oth")
    issued = await runtime.services.keys.create(root, NewKey(name="k"))  # default project
    bound = caller(org_id, "*", project_id=other.id)
    with pytest.raises(NotFoundError):
        await runtime.services.keys.get(bound, issued.record.id)
    with pytest.raises(NotFoundError):
        await runtime.services.key_limits.adjust_credits(bound, issued.record.id, 1, "r")
    verdict = await runtime.services.verifier.verify(bound, VerifyRequest(key=issued.secret))
    assert verdict.code is Code.NOT_FOUND
    assert [p.id for p in await runtime.services.projects.list(bound)] == [other.id]


async def test_reading_use_cases_never_reach_another_organizations_objects(
    runtime: Runtime,
) -> None:
    """Each reader of one object by id answers not-found to a caller of another organization,
    holding every scope: the object exists, just not for them."""
    services = runtime.services
    root = caller(runtime.default_project.org_id, "*")
    issued = await services.keys.create(root, NewKey(name="k"))
    endpoint = await services.webhooks.create(
        root, NewEndpoint(url="https://hooks.example.com/x", events=("key.*",))
    )
    secret = await services.signing_secrets.create(root, "owner-1")
    entry_id = (await services.audit_read.list(root, AuditQuery(), None, 1)).entries[0]["id"]
    reads: list[tuple[str, Callable[[Principal], Awaitable[Any]]]] = [
        ("webhooks.get", lambda p: services.webhooks.get(p, endpoint.endpoint.id)),
        ("signing_secrets.get", lambda p: services.signing_secrets.get(p, secret.record.id)),
        ("audit_read.get", lambda p: services.audit_read.get(p, entry_id)),
        (
            "analytics.key_report",
            lambda p: services.analytics.key_report(p, issued.record.id, "24h", "hour"),
        ),
        (
            "audit_read.for_key",
            lambda p: services.audit_read.for_key(p, issued.record.id, AuditQuery(), None, 10),
        ),
    ]
    stranger = caller("org_someone_else", "*")
    for name, read in reads:
        with pytest.raises(NotFoundError):
            await read(stranger)
        assert await read(root) is not None, name  # and its own organization does see it


async def test_a_project_bound_caller_reads_no_analytics_or_audit_of_other_projects(
    runtime: Runtime,
) -> None:
    services = runtime.services
    org_id = runtime.default_project.org_id
    root = caller(org_id, "*")
    other = await services.projects.create(root, "other", "oth")
    issued = await services.keys.create(root, NewKey(name="k"))  # default project
    bound = caller(org_id, "*", project_id=other.id)
    with pytest.raises(NotFoundError):
        await services.analytics.key_report(bound, issued.record.id, "24h", "hour")
    with pytest.raises(NotFoundError):
        await services.audit_read.for_key(bound, issued.record.id, AuditQuery(), None, 10)
    own = caller(org_id, "*", project_id=runtime.default_project.id)
    report = await services.analytics.key_report(own, issued.record.id, "24h", "hour")
    assert report.key_id == issued.record.id
    page = await services.audit_read.for_key(own, issued.record.id, AuditQuery(), None, 10)
    assert [e["action"] for e in page.entries] == ["key.created"]
