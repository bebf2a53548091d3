"""The OpenAPI document is complete: every route, a security scheme, examples, errors.

The examples are checked against the schemas beside them (a JSON Schema validator resolving
the document's own ``$ref``s), so an example cannot drift from the models it illustrates.
"""

from __future__ import annotations

from typing import Any

import fastapi.routing
import jsonschema_rs
import pytest
from fastapi import FastAPI
from starlette.routing import Mount

from keyplane.api.app import create_app
from keyplane.settings import Settings

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}

#: Routes that are not operations of the API, or are documented as another operation.
NOT_OPERATIONS = {
    "/docs",  # the HTML page showing this document
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",  # this document
}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(database_url="sqlite://", secret="s" * 40))


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _served(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of every route the app serves, the included routers' with full paths.

    Newer FastAPI keeps included routers as single entries of ``app.routes``;
    ``iter_route_contexts`` walks into them (older versions flattened them already).
    """
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Any = list(walk(app.routes)) if walk else app.routes
    served = set()
    for route in routes:
        if isinstance(getattr(route, "original_route", route), Mount):
            continue
        for method in getattr(route, "methods", None) or ():
            # path_format: the path as documented, without convertors (``{id:credential_id}``).
            served.add((getattr(route, "path_format", route.path), method.lower()))
    return served


#: Served, and deliberately not separate operations of the document.
ALIASES = {
    # Forward auth answers every method on every sub-path alike: documented as GET /v1/auth.
    *{("/v1/auth", m) for m in ("post", "put", "patch", "delete", "options")},
    *{("/v1/auth/{path}", m) for m in ("get", "post", "put", "patch", "delete", "options")},
}


def test_every_route_is_in_the_document(app: FastAPI, document: dict[str, Any]) -> None:
    documented = {(path, method) for path, method, _ in _operations(document)}
    served = _served(app)
    assert len(served) > 60, len(served)  # the walk reached the included routers
    missing = []
    for path, method in sorted(served):
        if path in NOT_OPERATIONS or method == "head" or (path, method) in ALIASES:
            continue
        if path.endswith("{path}") and path.startswith(("/api/v1/", "/prod/")):
            continue  # a compat surface's catch-all: it only answers errors
        if path.endswith("/") and (path.rstrip("/"), method) in documented:
            continue  # OpenRouter's slash twin of a documented operation
        if (path, method) not in documented:
            missing.append((method, path))
    assert not missing, missing


def test_every_served_path_answers_as_documented_or_is_a_known_alias(
    document: dict[str, Any],
) -> None:
    """The catch-alls and aliases that stay out of the document are exactly these."""
    paths = set(document["paths"])
    assert "/v1/auth" in paths
    assert "/v1/auth/{path}" not in paths  # the same operation under a prefix (Envoy)
    assert not any(path.endswith("/") for path in paths)  # OpenRouter's slash twins
    assert not any("{path" in path for path in paths)  # the compat surfaces' catch-alls
    for prefix in ("/api/v1/", "/prod/"):
        assert any(path.startswith(prefix) for path in paths), prefix


def test_docs_have_an_authorize_button(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["managementKey"] == schemes["managementKey"] | {
        "type": "http",
        "scheme": "bearer",
    }
    for path, method, operation in _operations(document):
        if path in {"/healthz", "/readyz", "/metrics"}:
            assert operation["security"] == [], path
        elif path == "/v1/auth":
            assert operation["security"] == [{"gatewayKey": [], "apiKey": []}]
        elif path.startswith("/v1/self/"):
            assert operation["security"] == [{"ownKey": []}]
        elif path == "/v1/secret-scanning/github":
            # GitHub's request signature is the credential (docs/leaks-and-reports.md).
            assert operation["security"] == [{"githubSignature": []}]
            assert schemes["githubSignature"]["name"] == "Github-Public-Key-Signature"
        else:
            assert operation["security"] == [{"managementKey": []}], (method, path)


def test_compat_surfaces_and_forward_auth_are_tagged_apart(document: dict[str, Any]) -> None:
    tags = {path: operation["tags"] for path, _method, operation in _operations(document)}
    assert tags["/api/v1/keys"] == ["compat: OpenRouter / AnyAPI"]
    assert tags["/prod/createServiceKey"] == ["compat: FastRouter"]
    assert tags["/v1/auth"] == ["gateway (forward auth)"]
    declared = {tag["name"] for tag in document["tags"]}
    assert {tag for names in tags.values() for tag in names} <= declared


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    wrapped = {"components": document["components"], **schema}
    return jsonschema_rs.Draft202012Validator(wrapped)


def test_every_operation_has_valid_request_and_response_examples(
    document: dict[str, Any],
) -> None:
    checked = 0
    for path, method, operation in _operations(document):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            assert "example" in body, ("request", method, path)
            errors = list(_validator(document, body["schema"]).iter_errors(body["example"]))
            assert not errors, (method, path, [str(e) for e in errors[:3]])
            checked += 1
        successes = [s for s in operation["responses"] if s.startswith("2")]
        assert successes, (method, path)
        for status in successes:
            content = operation["responses"][status].get("content", {})
            if path == "/v1/auth":
                continue  # forward auth answers with headers; its body is not the point
            if status == "204":
                assert not content, (status, method, path)  # No Content: never a body
                continue
            assert content, (status, method, path)
            for media_type, media in content.items():
                assert "example" in media, ("response", status, method, path)
                # NDJSON is lines of JSON, not one document: its example is text, like CSV's.
                if media_type == "application/json":
                    validator = _validator(document, media["schema"])
                    errors = list(validator.iter_errors(media["example"]))
                    assert not errors, (status, method, path, [str(e) for e in errors[:3]])
                    checked += 1
    assert checked >= 60, checked


def test_every_operation_documents_its_errors_with_an_example(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
        if path in {"/healthz", "/metrics"}:
            assert not errors, path
            continue
        assert errors, (method, path)
        if path.startswith("/v1/") and path != "/v1/auth":
            assert {"401", "403", "503"} <= set(errors), (method, path)
            for status, response in errors.items():
                example = response["content"]["application/problem+json"]["example"]
                assert example["status"] == int(status), (method, path, status)
                assert example["code"], (method, path, status)
            # A body brings its parse and size errors; without one they cannot happen.
            has_body = "requestBody" in operation
            assert ("413" in errors) == has_body, (method, path)
            assert ("400" in errors) == has_body, (method, path)
        elif path.startswith(("/api/v1/", "/prod/")):
            assert "422" not in errors, (method, path)  # the vendors answer 400
            for response in errors.values():
                assert "error" in response["content"]["application/json"]["example"]


def test_the_vault_lease_keeps_its_specific_refusals(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/vault/leases"]["post"]["responses"]
    assert "NO_CREDENTIAL" in responses["404"]["description"]
    assert "ALL_RATE_LIMITED" in responses["429"]["description"]
