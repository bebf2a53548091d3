"""The scope is checked before the body is parsed, on every route that takes a body.

A management key that may only ``verify`` once made the server parse a hostile amount on routes
it had no scope for (validation ran first, then the 403): the scope now comes from a
dependency, which FastAPI resolves before it validates the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute

from keyplane.api.app import create_app
from keyplane.domain import money
from tests.conftest import Api, Database


def _routes(routes: Any) -> Iterator[APIRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        elif isinstance(route, APIRoute):
            yield route


def _required_scopes(dependant: Any) -> list[str]:
    found = []
    for dependency in dependant.dependencies:
        scope = getattr(dependency.call, "required_scope", None)
        if scope is not None:
            found.append(scope)
        found += _required_scopes(dependency)
    return found


def _body_routes(sqlite_database: Database) -> list[APIRoute]:
    app = create_app(sqlite_database.settings())
    return [route for route in _routes(app.routes) if route.body_field is not None]


def test_every_route_with_a_body_checks_a_scope_before_it(sqlite_database: Database) -> None:
    routes = _body_routes(sqlite_database)
    assert len(routes) >= 20, "the route walk found too few routes to be meaningful"
    unchecked = [
        f"{sorted(route.methods)} {route.path}"
        for route in routes
        if len(_required_scopes(route.dependant)) != 1
    ]
    assert unchecked == []


# A body that is hostile everywhere an amount could be, and invalid everywhere else.
HOSTILE_BODY = {
    "cost": "1e200000",
    "limit": "9e999992",
    "credit_limit": "1e1000000",
    "policy": {"budget": {"credit_limit": "1e200000", "per_model": {"*": "1e200000"}}},
    "daily_limit": "1e200000",
}


async def test_a_key_without_the_scope_is_refused_before_its_body_is_read(
    api: Api, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = await api.management_key("verify")
    parsed: list[object] = []
    real = money.to_micros

    def spy(value: Any) -> int:
        parsed.append(value)
        return real(value)

    monkeypatch.setattr(money, "to_micros", spy)
    for route in _body_routes(sqlite_database):
        if _required_scopes(route.dependant) == ["verify"]:
            continue
        # Drop path convertors ({credential_id:credential_id}) before filling the template.
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path).format(
            id_or_hash="key_00000000000000000000000000",
            plan="base",
            credential_id="cred_00000000000000000000000000",
            lease_id="lease_00000000000000000000000000",
            key_hash="0" * 64,
            secret_id="sigsec_00000000000000000000000000",
            endpoint_id="whe_00000000000000000000000000",
            project_id="proj_00000000000000000000000000",
            key_id="key_00000000000000000000000000",
        )
        for method in route.methods:
            response = await api.client.request(
                method, path, json=HOSTILE_BODY, headers=api.as_key(verifier)
            )
            assert response.status_code == 403, f"{method} {path}: {response.text}"
            code = response.json().get("code") or response.json()["error"]["code"]
            assert code in ("MISSING_SCOPE", 403), f"{method} {path}: {response.text}"
    assert parsed == [], "an amount was parsed for a key without the scope"


async def test_with_the_scope_the_same_body_is_a_422(api: Api) -> None:
    usage_writer = await api.management_key("usage:write")
    response = await api.client.post(
        "/v1/usage", json={"cost": "1e200000"}, headers=api.as_key(usage_writer)
    )
    assert response.status_code == 422, response.text
