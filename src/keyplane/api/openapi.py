"""The OpenAPI document: FastAPI's, completed with what it cannot infer.

FastAPI derives paths and schemas from the routes. This module adds, once per app and cached:

* the security schemes (``/docs`` gets its Authorize button) and each operation's requirement;
* the compatibility surfaces and forward auth, under tags of their own (their routers name
  them), with the error bodies they really answer;
* the error responses each operation can really give, with an example problem body naming a
  code it can answer;
* a request and a response example on every operation (:mod:`.openapi_examples`).

``tests/api/test_openapi_document.py`` checks that every route is in the document and that
every example is valid against the schema beside it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from keyplane.api import openapi_examples
from keyplane.api.problems import PROBLEM_MEDIA_TYPE, Problem

#: Route prefixes documented under a tag of their own, with the error body's shape there.
COMPAT_TAGS = {
    "/api/v1/": "compat: OpenRouter / AnyAPI",
    "/prod/": "compat: FastRouter",
}
GATEWAY_TAG = "gateway (forward auth)"
#: Authenticated by its request signature, not a management key.
SIGNED_PATH = "/v1/secret-scanning/github"
#: ParrotRouter documents no error body: its surface answers problem+json like /v1.
PARROT_TAG = "compat: ParrotRouter"

TAGS = [
    {"name": "keys", "description": "Issue, list, change, rotate, disable and revoke API keys."},
    {"name": "verify", "description": "Check a key and admit a request (limits, budgets)."},
    {"name": "usage", "description": "Report usage against a verified request; read events."},
    {"name": "plans", "description": "Named policies keys can follow."},
    {"name": "management keys", "description": "Keys that call this API, with scopes."},
    {"name": "projects", "description": "Projects within the organization."},
    {"name": "vault", "description": "Upstream provider credentials: store, lease, release."},
    {"name": "organization", "description": "The organization's settings and aliases."},
    {"name": "audit", "description": "The tamper-evident audit log: read, verify, export."},
    {"name": "webhooks", "description": "Webhook endpoints and their deliveries."},
    {"name": "signing secrets", "description": "Secrets that sign webhook deliveries."},
    {"name": "analytics", "description": "Usage and spend aggregated over time and keys."},
    {"name": "jobs", "description": "Scheduled jobs (key rotation sweeps, ...): see docs."},
    {
        "name": "self",
        "description": "Calls an API key makes about itself, authenticated by the key (here:"
        " the OLD key claiming the secret an automatic rotation held). See docs/lifecycle.md.",
    },
    {"name": "reports", "description": "The security report: risky keys and management keys."},
    {
        "name": "leaks",
        "description": "Leaked keys: GitHub secret scanning, operator reports, each project's"
        " action. See docs/leaks-and-reports.md.",
    },
    {"name": "operations", "description": "Liveness, readiness and metrics; no key needed."},
    {
        "name": GATEWAY_TAG,
        "description": "Forward authentication for nginx auth_request, Traefik ForwardAuth and"
        " Envoy ext_authz (HTTP); see docs/gateway.md. The answer is the status code.",
    },
    {
        "name": COMPAT_TAGS["/api/v1/"],
        "description": "OpenRouter's and AnyAPI's key provisioning API, over Keyplane's keys;"
        ' errors as `{"error": {"code", "message", "metadata"}}`.'
        " See docs/compatibility.md.",
    },
    {
        "name": COMPAT_TAGS["/prod/"],
        "description": "FastRouter's service-key API, over Keyplane's keys; errors as"
        ' `{"error": {"message", "type", "code"}}`. See docs/compatibility.md.',
    },
    {
        "name": PARROT_TAG,
        "description": "ParrotRouter's key management API (seed 004), mapped onto the native"
        " keys and policy; errors as problem+json, as on /v1. See docs/compatibility.md.",
    },
]

SECURITY_SCHEMES: dict[str, Any] = {
    "managementKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "kp_mgmt_...",
        "description": "A management key (`Authorization: Bearer kp_mgmt_...`); each operation"
        " needs a scope, named in its description. The compatibility surfaces take the same"
        " key.",
    },
    "githubSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Github-Public-Key-Signature",
        "description": "Secret scanning: GitHub's ECDSA P-256 signature of the raw body (base64"
        " DER), by the key named in `Github-Public-Key-Identifier` (configured with"
        " KEYPLANE_SECRET_SCANNING_KEYS). No management key.",
    },
    "gatewayKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Keyplane-Gateway-Key",
        "description": "Forward auth: the gateway's own management key, with scope `verify`.",
    },
    "ownKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "kp_live_...",
        "description": "An API key speaking for itself (`Authorization: Bearer kp_live_...`):"
        " for /v1/self, the key an automatic rotation replaced, during its grace period.",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Forward auth: the client's API key, as `Bearer kp_live_...` (or in the"
        " header named by KEYPLANE_AUTH_KEY_HEADER).",
    },
}

_PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}
_COMPAT_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object"}},
}

#: Per status: what it means and an example code, for a native operation.
_ERRORS: dict[int, tuple[str, str, str]] = {
    400: (
        "the request body is not valid JSON",
        "INVALID_JSON",
        "the request body is not valid JSON",
    ),
    401: ("no, or an invalid, management key", "UNAUTHENTICATED", "invalid or missing key"),
    403: (
        "the management key lacks the scope or project this needs",
        "FORBIDDEN",
        "this management key lacks the scope keys:write",
    ),
    404: ("no such object, or not visible to this management key", "NOT_FOUND", "no such key"),
    409: (
        "the object's state, or an idempotency key, forbids the operation",
        "CONFLICT",
        "the key is revoked",
    ),
    413: ("the request body is over the size limit", "PAYLOAD_TOO_LARGE", "request body too large"),
    422: (
        "the request breaks a validation rule",
        "VALIDATION_FAILED",
        "invalid request: body.name: String should have at least 1 character",
    ),
    429: ("every matching credential is at its limit; see retry_after", "ALL_RATE_LIMITED", ""),
    503: (
        "the database (or, for the vault, the master key) is unavailable",
        "UNAVAILABLE",
        "the database is unavailable",
    ),
}
_WRITE_METHODS = {"post", "put", "patch", "delete"}


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with :func:`document`, built on first use and kept."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    """The whole OpenAPI document of ``app``."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=_DESCRIPTION,
        routes=app.routes,
        tags=TAGS,
    )
    components = doc.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = _problem_schema()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            _complete(path, method, operation)
    return doc


def _problem_schema() -> dict[str, Any]:
    schema = Problem.model_json_schema()
    schema.pop("title", None)
    return schema


def _complete(path: str, method: str, operation: dict[str, Any]) -> None:
    tags = operation.get("tags", [])
    compat = any(tag in COMPAT_TAGS.values() for tag in tags)
    if path == "/v1/auth":
        operation["security"] = [{"gatewayKey": [], "apiKey": []}]
        operation["description"] = _FORWARD_AUTH
        operation["responses"] = _FORWARD_AUTH_RESPONSES
    elif "operations" in tags:
        operation["security"] = []
    elif path.startswith("/v1/self/"):
        operation["security"] = [{"ownKey": []}]
        _document_errors(path, method, operation, compat)
    elif path == SIGNED_PATH:
        operation["security"] = [{"githubSignature": []}]
        _document_errors(path, method, operation, compat)
    else:
        operation["security"] = [{"managementKey": []}]
        _document_errors(path, method, operation, compat)
    _add_examples(operation)


def _document_errors(path: str, method: str, operation: dict[str, Any], compat: bool) -> None:
    """The error statuses this operation can answer, each with an example body."""
    responses: dict[str, Any] = operation["responses"]
    has_body = "requestBody" in operation
    statuses = {401, 403, 503}
    if has_body:
        statuses |= {400, 413}
    if has_body or operation.get("parameters"):
        statuses.add(422)
    if "{" in path or method in _WRITE_METHODS:
        statuses.add(404)  # an id in the path; or a project, plan or key the body names
    if method in _WRITE_METHODS:
        statuses.add(409)
    statuses |= {int(s) for s in responses if s[0] in "45"}
    if compat:
        # The vendors answer every bad request with 400, where /v1 says 422.
        statuses = (statuses - {422}) | {400}
        responses.pop("422", None)
    for status in sorted(statuses):
        meaning, code, detail = _ERRORS.get(status, ("an error", "ERROR", ""))
        known = responses.get(str(status), {})
        description = known.get("description") or meaning
        if compat:
            body = openapi_examples.compat_error(path, status, code, detail or meaning)
            content = {"application/json": {"schema": _COMPAT_ERROR_SCHEMA, "example": body}}
        else:
            example = {
                "type": "about:blank",
                "title": _TITLES.get(status, "Error"),
                "status": status,
                "code": code,
                "detail": detail or meaning,
            }
            content = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA, "example": example}}
        entry: dict[str, Any] = {"description": description, "content": content}
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        responses[str(status)] = entry


def _add_examples(operation: dict[str, Any]) -> None:
    operation_id = operation.get("operationId", "")
    request, response = openapi_examples.for_operation(operation_id)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None and request is not None:
        body["example"] = request
    for status, answer in operation["responses"].items():
        if not status.startswith("2"):
            continue
        others = openapi_examples.MEDIA_EXAMPLES.get(operation_id, {})
        for media_type, media in answer.get("content", {}).items():
            if response is not None and media_type == "application/json":
                media["example"] = response
            elif media_type.split(";")[0] in others:
                media["example"] = others[media_type.split(";")[0]]


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}

_DESCRIPTION = """\
Self-hosted API key management: issue, scope, verify, meter and revoke API keys.

Authenticate with a management key: `Authorization: Bearer kp_mgmt_...` (the **Authorize**
button). Errors are RFC 9457 `application/problem+json` bodies with a stable `code`, except on
the compatibility surfaces, which answer in their vendor's format. Credits are exact decimal
numbers. See docs/api.md for the guide.
"""

_FORWARD_AUTH = """\
Forward authentication: 200 when the request's API key may be used now, else 401, 402, 403
or 429, with `X-Keyplane-*` headers describing the key and its limits. Every method (GET,
HEAD, POST, PUT, PATCH, DELETE, OPTIONS) and every sub-path (`/v1/auth/...`, as Envoy sends
them) means the same. The gateway authenticates with its own management key (scope `verify`)
in `X-Keyplane-Gateway-Key`; the client's API key is read from `Authorization` or the header
named by KEYPLANE_AUTH_KEY_HEADER; the original request comes as `X-Forwarded-*` headers from
KEYPLANE_TRUSTED_PROXIES. See docs/gateway.md.
"""

_FORWARD_AUTH_RESPONSES: dict[str, Any] = {
    "200": {
        "description": "the key may be used; X-Keyplane-Key-Id, -Owner, -Scopes, ... describe it",
        "headers": {"X-Keyplane-Key-Id": {"schema": {"type": "string"}}},
    },
    "400": {"description": "a forwarded header is malformed (INVALID_HEADER)"},
    "401": {"description": "no API key, an unknown one, or an invalid gateway key"},
    "402": {"description": "the key's budget is spent"},
    "403": {"description": "the key may not be used for this request (scope, model, network)"},
    "429": {"description": "a rate, token or concurrency limit; see Retry-After"},
    "503": {"description": "the database or limiter is unavailable"},
}
