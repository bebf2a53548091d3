"""Schemathesis over the app's own OpenAPI document, in-process over ASGI, on SQLite.

Two bounded runs over every operation: schemathesis' deterministic coverage cases (boundary
values, missing and malformed parameters, undeclared methods), then Hypothesis fuzzing in both
positive and negative mode. No response may be a 5xx, and every response must match the spec:
a schema-valid request is accepted (but for the few rules listed in BEYOND_THE_SCHEMA), a
schema-invalid one refused, and a 405 lists in ``Allow`` exactly the methods the path documents.
Derandomized, so a failure reproduces; about a minute in all on a loaded 2-core machine.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.errors import FailureGroup
from schemathesis.python import asgi

from keyplane.api.app import create_app
from tests.conftest import ROOT_KEY, Database

AUTH = {"Authorization": f"Bearer {ROOT_KEY}"}
FUZZ_EXAMPLES_PER_OPERATION = 12  # with the coverage cases, about a minute on a loaded machine
MIN_COVERAGE_CASES_PER_OPERATION = 2
MIN_OPERATIONS = 18  # the API has 18 today; none may silently drop out of the run
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# /v1/secret-scanning/github takes a request signed by GitHub's key, which no generated case
# carries (all would be 401s): tests/api/test_leaks.py covers it, its bad bodies included.
# The ParrotRouter surface translates a body and has the native model validate the result: its
# schema states the seed's shape, not every native rule behind it, so schema-valid bodies are
# refused by design. Its hostile input is tested in tests/api/test_compat_parrotrouter.py.
NOT_NATIVE = r"^/(?:api/v1|prod|parrotrouter/v1)/|^/v1/auth$|^/v1/secret-scanning/"


def _beyond_the_schema(response: schemathesis.Response) -> bool:
    """A 422 for a rule that JSON Schema cannot state (see BEYOND_THE_SCHEMA)."""
    if response.status_code != 422:
        return False
    problem = response.json()
    if problem["code"] in BEYOND_THE_SCHEMA:
        return True
    locations = [error["loc"] for error in problem.get("errors") or [{"loc": ""}]]
    return problem["code"] == "VALIDATION_FAILED" and all(
        BEYOND_THE_SCHEMA_FIELDS.fullmatch(location) for location in locations
    )


#: Refusals of schema-valid requests by rules a JSON Schema cannot state; each has its own code
#: and is explained in docs/api.md. Everything else a schema-valid request meets must be
#: stated in the document (a pattern, an enum, a oneOf), or the run fails.
BEYOND_THE_SCHEMA = {
    "INVALID_EXPIRY",  # expires_at lies in the future: relative to the clock
    "IDEMPOTENCY_KEY_REQUIRED",  # an Idempotency-Key header or a request_id: across locations
    "PLAN_NOT_FOUND",  # the plan a key names exists: data, not shape (like a 404 for an id)
    "INVALID_FILTER",  # tags=a,b,...: at most 50 tags once each value is split on commas
    "INVALID_CURSOR",  # an audit cursor is a token the server made: data, not shape
    "INVALID_PERIOD",  # audit start before end, a period or start/end: across fields
    "INVALID_TIME",  # a date the calendar lacks (a 30th of February): the pattern has the shape
    # A webhook URL: https (or http when allowed) to an address the SSRF guard accepts under
    # the operator's settings, or an email address for kind "email" (docs/webhooks.md).
    "INVALID_WEBHOOK_URL",
    "UNKNOWN_WINDOW",  # a limits reset names a window the key's policy has: data, not shape
    # Key rotation (docs/lifecycle.md): grace_period_seconds and _hours agree, and no grace
    # with invalidate_old: across fields; a cron expression's grammar and that it ever fires;
    # an enabled rotation policy has a schedule or a max_age_days: across fields.
    "CONFLICTING_GRACE",
    "INVALID_SCHEDULE",
    "INVALID_ROTATION_POLICY",
}
#: The same for fields whose validator parses a little language or compares fields: their
#: rules are in the field's description and docs/api.md or docs/policy.md.
BEYOND_THE_SCHEMA_FIELDS = re.compile(
    r"query\.timeout"  # only with wait=confirmed: a rule across two parameters
    # Analytics: a period fits its granularity (whole buckets, at most 2000, within the
    # retention), and only with include=usage on /v1/keys; an order fits its group_by.
    r"|query\.(?:period|order_by)"
    r"|body\.(?:credentials\.\d+\.)?(?:"
    r"policy\.network\.(?:origins|referrers)\.\d+"  # a URL pattern's grammar
    r"|policy\.network\.user_agent"  # a regular expression, and safe to run
    r"|policy\.network\.ip_(?:allow|deny)\.\d+"  # an IP address or CIDR network
    r"|policy\.network\.domains\.\d+"  # a host glob's grammar (labels, "*." before two)
    r"|policy\.signing"  # require_nonce needs require_timestamp: across fields
    r"|policy"  # unique rate limit names; a burst that drains within a year
    # Arbitrary JSON: depth, serialized size, integers (not floats) past 2^53, and control
    # characters below the top level would need a recursive schema.
    r"|metadata"
    # Credits ("", "1e200000"): another change reworks how credit amounts are parsed and
    # documented; this line goes with it.
    r"|cost|amount|policy\.budget\.credit_limit|policy\.budget\.per_model\..+"
    r"|policy\.costs\.per_\w+_max"
    # Per-model cost limits are keyed by model pattern, like budget.per_model: the key's
    # grammar (printable ASCII, no spaces) and its credits are checked beyond the schema.
    r"|policy\.models\.cost_limits\..+"
    r"|policy\.budget\.rollover\.max_carry"
    r")"
)


@schemathesis.check
def positive_data_acceptance_but_beyond_the_schema(
    ctx: checks.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """schemathesis' positive_data_acceptance, except for refusals in BEYOND_THE_SCHEMA."""
    try:
        return checks.positive_data_acceptance(ctx, response, case)
    except checks.Failure:
        if _beyond_the_schema(response):
            return None
        raise


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    positive_data_acceptance_but_beyond_the_schema,
    # These three only judge coverage cases (an omitted required header, an undeclared method)
    # and OPTIONS requests (the Allow header of their 405).
    checks.unsupported_method,
    checks.allow_header_conformance,
    checks.missing_required_header,
]
# Left out on purpose:
# - use_after_free, ensure_resource_availability: they judge stateful (linked) scenarios, which
#   this bounded run does not generate.
# - ignored_auth, object_level_authorization: tests/api covers authentication and tenancy.


@pytest.fixture
def schema(sqlite_database: Database) -> Iterator[schemathesis.BaseSchema]:
    app = create_app(sqlite_database.settings(), on_root_key=lambda _secret: None)
    try:
        # Loading the spec starts the app's lifespan on schemathesis' event-loop thread, where
        # every later request runs as well; it has to be stopped explicitly.
        loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
        # A body over KEYPLANE_MAX_BODY_BYTES is refused with 413 before it is parsed (a bulk
        # add past its maxItems is such a body): a rejection like any other.
        rejection = loaded.config.checks.negative_data_rejection
        rejection.expected_statuses = [*rejection.expected_statuses, "413"]
        # Every request carries the root key (AUTH); authentication has its own tests (see
        # ignored_auth above). Without this, the documented security scheme makes schemathesis
        # leave the header out or break it, turning cases into 401s that test nothing here.
        _without_security(loaded.raw_schema)
        # The native API only: the compatibility surfaces answer in their vendors' formats and
        # forward auth answers every method; each has its own tests (tests/api/test_compat_*,
        # test_auth.py), and the document's completeness is test_openapi_document.py's.
        yield loaded.exclude(path_regex=NOT_NATIVE)
    finally:
        asgi.shutdown_lifespans()


#: Live streams answer for as long as the client reads: a case would never end. Their bad
#: input and rights are tested in tests/api/test_usage_stream.py.
ENDLESS = re.compile(r".*/usage/stream")


def _without_security(document: dict[str, Any]) -> None:
    document.get("components", {}).pop("securitySchemes", None)
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict):
                operation.pop("security", None)


def _operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    operations = [
        operation
        for operation in (result.ok() for result in schema.get_all_operations())
        if not ENDLESS.fullmatch(operation.path)
    ]
    in_spec = [
        (path, method)
        for path, item in schema.raw_schema["paths"].items()
        for method in item
        if method in HTTP_METHODS and not ENDLESS.fullmatch(path) and not re.match(NOT_NATIVE, path)
    ]
    assert len(operations) == len(in_spec) >= MIN_OPERATIONS, [op.label for op in operations]
    return operations


def _create(schema: schemathesis.BaseSchema, path: str, body: dict[str, Any]) -> dict[str, Any]:
    case = schema[path]["POST"].Case(body=body, media_type="application/json")
    response = case.call(headers=AUTH)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


_CREDENTIAL = {"provider": "openai", "alias": "fuzz target", "secret": "sk-fuzz-0123456789"}


def _existing_path_parameters(
    schema: schemathesis.BaseSchema, operation: schemathesis.APIOperation
) -> dict[str, str]:
    """Ids of freshly created objects, so fuzzing reaches more than the 404 branch."""
    names = {parameter.name for parameter in operation.path_parameters}
    if "id_or_hash" in names:
        return {"id_or_hash": _create(schema, "/v1/keys", {"name": "fuzz target"})["id"]}
    if "key_id" in names:
        body = {"name": "fuzz target", "scopes": ["keys:read"]}
        return {"key_id": _create(schema, "/v1/management-keys", body)["id"]}
    if "project_id" in names:
        body = {"name": f"fuzz-{secrets.token_hex(4)}"}  # several operations take a project
        return {"project_id": _create(schema, "/v1/projects", body)["id"]}
    if "plan" in names:
        body = {"name": f"fuzz-{secrets.token_hex(4)}"}
        return {"plan": _create(schema, "/v1/plans", body)["id"]}
    if "credential_id" in names:
        return {"credential_id": _create(schema, "/v1/vault/credentials", _CREDENTIAL)["id"]}
    if "secret_id" in names:
        return {"secret_id": _create(schema, "/v1/signing-secrets", {"owner": "fuzz target"})["id"]}
    if "lease_id" in names:
        _create(schema, "/v1/vault/credentials", _CREDENTIAL)
        case = schema["/v1/vault/leases"]["POST"].Case(
            body={"provider": "openai"}, media_type="application/json"
        )
        response = case.call(headers=AUTH)
        assert response.status_code == 201, response.text
        return {"lease_id": response.json()["lease_id"]}
    if "alias" in names:
        case = schema["/v1/organization/aliases/{alias}"]["PUT"].Case(
            path_parameters={"alias": "fuzz-target"}
        )
        response = case.call(headers=AUTH)
        assert response.status_code == 200, response.text
        return {"alias": "fuzz-target"}
    if "entry_id" in names:
        _create(schema, "/v1/keys", {"name": "fuzz target"})  # records key.created
        response = schema["/v1/audit"]["GET"].Case(query={"limit": 1}).call(headers=AUTH)
        assert response.status_code == 200, response.text
        return {"entry_id": response.json()["data"][0]["id"]}
    if "endpoint_id" in names:
        body = {"url": "https://hooks.example.com/fuzz", "events": ["ping"]}
        endpoint_id = _create(schema, "/v1/webhooks", body)["id"]
        found = {"endpoint_id": endpoint_id}
        if "delivery_id" in names:
            case = schema["/v1/webhooks/{endpoint_id}/test"]["POST"].Case(path_parameters=found)
            response = case.call(headers=AUTH)
            assert response.status_code == 202, response.text
            found["delivery_id"] = response.json()["data"]["id"]
        return found
    if "secret_id" in names:
        return {"secret_id": _create(schema, "/v1/signing-secrets", {"owner": "fuzz"})["id"]}
    assert not names, f"no existing object for path parameters {names}"
    return {}


def test_coverage_cases_for_every_operation_get_no_server_error_and_match_the_spec(
    schema: schemathesis.BaseSchema,
) -> None:
    cases: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = _operations(schema)
    for operation in operations:
        config = schema.config.generation_for(operation=operation, phase="coverage")
        for case in schema.iter_coverage_cases(
            operation, generation_modes=list(GenerationMode), generation_config=config
        ):
            cases[operation.label] += 1
            try:
                response = case.call_and_validate(headers=AUTH, checks=CHECKS)
            except FailureGroup as exc:
                failures.append(f"{operation.label}: {exc}")
                continue
            statuses[response.status_code] += 1

    assert not failures, f"{len(failures)} failing cases:\n\n" + "\n\n".join(failures[:5])
    thin = {label: n for label, n in cases.items() if n < MIN_COVERAGE_CASES_PER_OPERATION}
    assert set(cases) == {operation.label for operation in operations} and not thin, cases
    assert statuses[401] == 0, "requests were not authenticated"
    assert sum(n for status, n in statuses.items() if status < 300) > 0, statuses


def test_fuzzing_every_operation_gets_no_server_error_and_matches_the_spec(
    schema: schemathesis.BaseSchema,
) -> None:
    cases: dict[str, Counter[GenerationMode]] = defaultdict(Counter)
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    failures: list[str] = []
    operations = _operations(schema)
    for operation in operations:
        # Random ids (the 404 branch) and the id of an existing object (everything after it).
        variants: list[dict[str, Any]] = [{}]
        existing = _existing_path_parameters(schema, operation)
        if existing:
            variants.append({"path_parameters": existing})
        mixed = [
            operation.as_strategy(generation_mode=mode, **variant)
            for mode in GenerationMode
            for variant in variants
        ]
        _fuzz(operation, st.one_of(mixed), FUZZ_EXAMPLES_PER_OPERATION, cases, statuses, failures)
        if (operation.body or len(operation.query)) and not cases[operation.label][
            GenerationMode.NEGATIVE
        ]:
            # The derandomized mix drew no invalid request for this operation: draw some.
            negative = [
                operation.as_strategy(generation_mode=GenerationMode.NEGATIVE, **variant)
                for variant in variants
            ]
            examples = FUZZ_EXAMPLES_PER_OPERATION // 2
            _fuzz(operation, st.one_of(negative), examples, cases, statuses, failures)

    assert not failures, "\n\n".join(failures)
    assert set(cases) == {operation.label for operation in operations}
    for operation in operations:
        label = operation.label
        if operation.body or len(operation.query):
            assert cases[label].total() >= FUZZ_EXAMPLES_PER_OPERATION // 2, (label, cases[label])
            assert cases[label][GenerationMode.NEGATIVE] > 0, (label, cases[label])
        assert statuses[label][401] == 0, f"{label}: requests were not authenticated"
    successes = sum(n for counts in statuses.values() for s, n in counts.items() if s < 300)
    assert successes >= len(operations), statuses


def _fuzz(
    operation: Any,
    strategy: st.SearchStrategy[schemathesis.Case],
    examples: int,
    cases: dict[str, Counter[GenerationMode]],
    statuses: dict[str, Counter[int]],
    failures: list[str],
) -> None:
    """Send ``examples`` cases drawn from ``strategy``, counting modes and statuses."""

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        # Each example is a real request (too_slow), and negative mode rejects its draws
        # where there is nothing to break, like a free-form path id (filter_too_much).
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=AUTH, checks=CHECKS)
        assert case.meta is not None
        label = case.operation.label
        cases[label][case.meta.generation.mode] += 1
        statuses[label][response.status_code] += 1

    try:
        fuzz()
    except (FailureGroup, ExceptionGroup) as exc:
        failures.append(f"{operation.label}: {exc}")
