"""The published policy schema (``/openapi.json``'s components) is valid JSON Schema, seed 004's
requests validate against it as written, and it agrees with the API on the rules that a
pydantic schema alone would not say (key patterns of maps, ``signing``'s nonce rule).

Validated with ``jsonschema_rs`` (Draft 2020-12, the dialect of OpenAPI 3.1), as a
schema-driven client would.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Any

import jsonschema_rs
import pytest
import requests
from fastapi import FastAPI

from keyplane.api.app import create_app
from keyplane.settings import Settings
from tests.api import seed004_parrotrouter as seed
from tests.conftest import Api

SEED_BASE = "https://api.parrotrouter.com/v1"

#: Each of seed 004's examples that sends a body, with what it needs defined first.
SEED_EXAMPLES = (
    (seed.CREATE_KEY,),
    (seed.MODEL_PERMISSIONS, seed.SEND_PERMISSIONS),
    (seed.FEATURE_PERMISSIONS, seed.SEND_PERMISSIONS),
    (seed.RATE_LIMITS, seed.SEND_RATE_LIMITS),
    (seed.SECURITY_CONFIG,),
    (seed.AUTOMATIC_ROTATION,),
    (seed.MANUAL_ROTATION,),
    (seed.UPDATE_KEY,),
    (seed.DISABLE_KEY,),
    (seed.REVOKE_KEY,),
    (seed.TEAM_KEY,),
    (seed.ENVIRONMENT_KEYS,),
    (seed.EXPORT_AUDIT,),
)


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(database_url="sqlite://", secret="s" * 40))


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft202012Validator({"components": document["components"], **schema})


def _component(document: dict[str, Any], name: str) -> Any:
    return _validator(document, {"$ref": f"#/components/schemas/{name}"})


def test_every_component_is_valid_json_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    invalid = [name for name, schema in schemas.items() if not jsonschema_rs.meta.is_valid(schema)]
    assert not invalid
    for name in schemas:
        _component(document, name)  # every $ref resolves
    # Maps whose keys have a pattern say so for every key, not only the matching ones.
    assert "patternProperties" not in str(document)


class _Anything(dict[str, Any]):
    """A response body with whatever the example reads next."""

    def __missing__(self, key: str) -> _Anything:
        return _Anything()


class _Recorded:
    status_code = 201
    ok = True
    text = "{}"

    def json(self) -> _Anything:
        return _Anything()

    def raise_for_status(self) -> None:
        return None


def _seed_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """(method, path on /parrotrouter/v1, JSON body) of every body seed 004 sends."""
    sent: list[tuple[str, str, Any]] = []

    def record(method: str, url: str, **options: Any) -> _Recorded:
        if options.get("json") is not None:
            path = "/parrotrouter/v1" + url.removeprefix(SEED_BASE)
            sent.append((method.lower(), path, options["json"]))
        return _Recorded()

    monkeypatch.setattr(requests.api, "request", record)
    for parts in SEED_EXAMPLES:
        scope: dict[str, Any] = {
            "key_id": "key_0123456789abcdef",
            "requests": requests,
            "print": lambda *_: None,
        }
        with warnings.catch_warnings():
            # The seed writes "^YourApp/\d+\.\d+" in a plain string (as test_seed004_client).
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            code = compile("\n".join(parts), "seed004", "exec")
        # Errors come from reading the stand-in response, after the body was sent.
        with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
            exec(code, scope)  # noqa: S102 - the seed's own code, from this repository
    return sent


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method in item:
            operation: dict[str, Any] = item[method]
            return operation
    raise AssertionError(f"{method} {path} is not in the document")


def test_seed_004s_requests_validate_against_the_schema(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _seed_requests(monkeypatch)
    assert len(sent) >= 14, sent
    for method, path, body in sent:
        schema = _operation(document, method, path)["requestBody"]["content"]["application/json"]
        errors = [str(e) for e in _validator(document, schema["schema"]).iter_errors(body)]
        assert not errors, (method, path, errors[:3])


#: (policy, accepted): what the schema and the API must agree on.
POLICIES: list[tuple[dict[str, Any], bool]] = [
    ({"advanced_features": {"batch_processing": True}}, True),
    ({"advanced_features": {"Batch Processing": True}}, False),
    ({"advanced_features": {"": True}}, False),
    ({"models": {"cost_limits": {"gpt-4*": {"max_requests_per_day": 1}}}}, True),
    ({"models": {"cost_limits": {"gpt 4": {"max_requests_per_day": 1}}}}, False),
    ({"models": {"cost_limits": {"gpt-4\u00e9": {"max_requests_per_day": 1}}}}, False),
    ({"budget": {"credit_limit": 1, "per_model": {"gpt-4*": 1}}}, True),
    ({"budget": {"credit_limit": 1, "per_model": {"gpt 4": 1}}}, False),
    ({"signing": {}}, True),
    ({"signing": {"require_timestamp": False}}, False),
    ({"signing": {"require_timestamp": False, "require_nonce": True}}, False),
    ({"signing": {"require_timestamp": False, "require_nonce": False}}, True),
    ({"signing": {"require_timestamp": True, "require_nonce": True}}, True),
    ({"signing": {"require_nonce": False}}, True),
]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_the_schema_and_the_api_agree_on_policies(api: Api, document: dict[str, Any]) -> None:
    validator = _component(document, "PolicyIn")
    for policy, accepted in POLICIES:
        assert validator.is_valid(policy) is accepted, policy
        response = await api.client.post("/v1/keys", json={"name": "p", "policy": policy})
        assert (response.status_code == 201) is accepted, (policy, response.text)
        if not accepted:
            assert response.status_code == 422, response.text
