"""The OpenAPI document tells the truth: what it calls valid is accepted, its ``Allow`` is right.

Each rule a validator enforces beyond pydantic's own constraints is also written into the
document (a pattern, an enum, a oneOf). These tests hold every such written rule to the code that
enforces it, over many inputs, so neither can change alone; tests/api/test_schemathesis.py then
holds the running server to the document.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.api import fields, policy, schemas, vault_schemas
from keyplane.api.routes import vault as vault_routes
from keyplane.domain import globs, ids, periods, scopes, validation, vault
from keyplane.domain.tenancy import MANAGEMENT_SCOPES
from keyplane.errors import ValidationError
from keyplane.services import management
from tests.conftest import Api

HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
EXAMPLES = settings(max_examples=150, deadline=None, derandomize=True, database=None)

# Text that mixes the characters the rules are about with ordinary ones.
TRICKY = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from("\x00\x07\t\n\r\x1b\x1f\x7f\x85\x9f \u00a0\u2028\ufeffaZ0_-:*"),
    ),
    max_size=12,
)


def _openapi(api: Api) -> dict[str, Any]:
    return api.app.openapi()  # type: ignore[attr-defined,no-any-return]


def _accepts(check: Any, value: str) -> bool:
    try:
        check(value)
    except (ValueError, ValidationError):
        return False
    return True


# -- 405 answers --------------------------------------------------------------------------------


async def test_every_405_lists_exactly_the_documented_methods_of_its_path(api: Api) -> None:
    """Starlette answered 405 with the methods of the first route on the path only."""
    paths = _openapi(api)["paths"]
    checked = 0
    for template, item in paths.items():
        if template.startswith(("/api/v1/", "/prod/")) or template == "/v1/auth":
            continue  # vendor error formats, and forward auth answers every method
        documented = {method.upper() for method in item if method.upper() in HTTP_METHODS}
        path = re.sub(r"\{[^}]+\}", "x", template)
        for method in sorted(set(HTTP_METHODS) - documented):
            response = await api.client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "METHOD_NOT_ALLOWED"
            allow = {part.strip() for part in response.headers["allow"].split(",")}
            assert allow - {"HEAD"} == documented, (method, path, allow)
            checked += 1
    assert checked >= 50, checked


# -- documented statuses ---------------------------------------------------------------------


async def test_a_repeated_usage_report_answers_a_documented_200(api: Api) -> None:
    _, key = await api.create_key()
    first = await api.report(key_id=key["id"], request_id="req-1")
    again = await api.report(key_id=key["id"], request_id="req-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True
    documented = _openapi(api)["paths"]["/v1/usage"]["post"]["responses"]
    assert {"200", "201"} <= set(documented)
    assert documented["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UsageRecorded"
    }


def test_usage_reports_document_that_key_id_and_key_exclude_each_other() -> None:
    one_of = schemas.UsageReportIn.model_json_schema()["oneOf"]
    assert [branch["required"] for branch in one_of] == [["key_id"], ["key"]]


# -- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(60, True), (60.0, True), (-0.0, True), ("60", False), (True, False), (60.5, False)],
)
async def test_integer_fields_take_what_json_schema_calls_an_integer(
    api: Api, value: object, accepted: bool
) -> None:
    """JSON Schema (and so the document) counts 60.0 as an integer; it was refused."""
    _, key = await api.create_key()
    response = await api.client.post(
        f"/v1/keys/{key['id']}/rotate", json={"grace_period_seconds": value}
    )
    assert response.status_code == (200 if accepted else 422), response.text


async def test_a_rate_limit_period_of_60_0_is_one_minute(api: Api) -> None:
    window = {"name": "minute", "limit": 10.0, "period": 60.0}
    response = await api.client.post(
        "/v1/plans", json={"name": "p", "policy": {"rate_limits": [window]}}
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["policy"]["rate_limits"][0]["period"] == "1m"


# -- written rules agree with the code that enforces them ----------------------------------------


@EXAMPLES
@given(TRICKY)
def test_the_text_patterns_are_check_text(text: str) -> None:
    assert bool(re.fullmatch(fields.TEXT_PATTERN, text)) == _accepts(validation.check_text, text)
    multiline = re.fullmatch(fields.MULTILINE_PATTERN, text) is not None
    assert multiline == _accepts(lambda t: validation.check_text(t, multiline=True), text)


@EXAMPLES
@given(TRICKY.filter(lambda tag: len(tag) <= validation.MAX_TAG_LENGTH))
def test_the_tag_pattern_is_check_tags(tag: str) -> None:
    written = tag != "" and re.fullmatch(fields.TRIMMED_PATTERN, tag) is not None
    assert written == _accepts(lambda t: validation.check_tags([t]), tag)


@EXAMPLES
@given(
    st.one_of(
        TRICKY,
        st.sampled_from(sorted(vault.PROVIDERS)).flatmap(
            lambda name: st.tuples(
                st.sampled_from(["", " ", "\t"]),
                st.lists(st.booleans(), min_size=len(name), max_size=len(name)),
                st.sampled_from(["_", "-", " ", "__", "x"]),
                st.sampled_from(["", " ", "1"]),
            ).map(
                lambda parts: (
                    parts[0]
                    + "".join(
                        (c.upper() if up else c) for c, up in zip(name, parts[1], strict=True)
                    ).replace("_", parts[2])
                    + parts[3]
                )
            )
        ),
    )
)
def test_the_provider_pattern_is_normalize_provider(text: str) -> None:
    written = re.fullmatch(vault_schemas.PROVIDER_PATTERN, text) is not None
    assert written == _accepts(vault.normalize_provider, text), text


def test_the_provider_pattern_knows_every_spelling_of_a_letter() -> None:
    # The Kelvin sign lower-cases to "k": normalize_provider takes it, so the pattern does.
    assert re.fullmatch(vault_schemas.PROVIDER_PATTERN, "SLAC\u212a")
    assert vault.normalize_provider("SLAC\u212a") == "slack"


@EXAMPLES
@given(
    st.one_of(
        st.from_regex(r"0{0,3}[0-9]{1,9}[smhdx]?", fullmatch=True),
        st.integers(0, 3 * 10**6).map(lambda n: f"{n}s"),
        st.integers(0, 50_000).map(lambda n: f"{n}m"),
        st.integers(0, 800).map(lambda n: f"{n}h"),
        st.integers(0, 40).map(lambda n: f"{n}d"),
    )
)
def test_the_duration_pattern_is_parse_duration(text: str) -> None:
    written = re.fullmatch(policy.DURATION_PATTERN, text) is not None
    assert written == _accepts(periods.parse_duration, text), text


def test_the_duration_pattern_holds_at_the_range_edges() -> None:
    for text, accepted in [
        ("1", True), ("0", False), ("0s", False), ("2592000", True), ("2592001", False),
        ("43200m", True), ("43201m", False), ("720h", True), ("721h", False),
        ("30d", True), ("31d", False), ("000000000001s", True), ("0000000000001s", False),
    ]:  # fmt: skip
        assert (re.fullmatch(policy.DURATION_PATTERN, text) is not None) is accepted, text
        assert _accepts(periods.parse_duration, text) is accepted, text


def test_the_documented_management_scopes_are_those_the_service_takes() -> None:
    enum = schemas.ManagementKeyCreate.model_json_schema()["properties"]["scopes"]["items"]["enum"]
    # Every pattern built from the known scopes' segments, "*" and a stranger, up to 3 deep.
    segments = sorted({part for scope in MANAGEMENT_SCOPES for part in scope.split(":")})
    words = [*segments, "*", "other"]
    candidates = {
        ":".join(combo) for depth in (1, 2, 3) for combo in itertools.product(words, repeat=depth)
    }
    taken = {
        scope
        for scope in candidates
        if _accepts(lambda s: management._check_management_scopes((s,)), scope)
    }
    assert set(enum) == taken
    assert all(scopes.is_valid_scope(scope) for scope in enum)


def test_model_patterns_document_printable_ascii_without_spaces() -> None:
    schema = policy.ModelRules.model_json_schema()["properties"]["allow"]["items"]
    for text in ["gpt-4*", "a", "~", "!", "", " ", "gpt 4", "caf\u00e9", "x" * 129, "\x7f", "\t"]:
        written = (
            schema["minLength"] <= len(text) <= schema["maxLength"]
            and re.fullmatch(schema["pattern"], text) is not None
        )
        assert written == _accepts(globs.check_model_pattern, text), text


@EXAMPLES
@given(st.one_of(TRICKY, st.from_regex(r"cred_[0-9a-z]{25,27}", fullmatch=True)))
def test_the_credential_id_pattern_is_looks_like_id(text: str) -> None:
    written = re.fullmatch(vault_routes.CREDENTIAL_ID_PATTERN, text) is not None
    assert written == ids.looks_like_id(text, "cred")


@EXAMPLES
@given(st.one_of(TRICKY, st.from_regex(r"[a-z.]{1,20}", fullmatch=True)))
def test_the_metadata_path_pattern_is_parse_metadata_path(text: str) -> None:
    written = re.fullmatch(fields.METADATA_PATH_PATTERN, text) is not None
    assert written == _accepts(validation.parse_metadata_path, text)


async def test_get_and_delete_on_the_bulk_path_are_not_a_credential_lookup(api: Api) -> None:
    """OpenAPI matches /credentials/bulk before /credentials/{credential_id}; so does routing."""
    for method in ("GET", "PATCH", "DELETE", "OPTIONS"):
        response = await api.client.request(method, "/v1/vault/credentials/bulk")
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST"


async def test_a_credential_update_documents_the_only_statuses_it_takes(api: Api) -> None:
    schema = vault_schemas.CredentialUpdate.model_json_schema()["properties"]["status"]
    assert schema["enum"] == ["active", "disabled", None]
    body = {"provider": "openai", "alias": "a", "secret": "sk-0123456789abcdef"}
    created = (await api.client.post("/v1/vault/credentials", json=body)).json()["data"]
    for status in ("revoked", "cooling_down"):
        response = await api.client.patch(
            f"/v1/vault/credentials/{created['id']}", json={"status": status}
        )
        assert response.status_code == 422
        assert response.json()["code"] == "INVALID_STATUS"
