"""Every hostile decimal shape (``tests/hostile/decimals.py``) on every surface taking an amount.

Each surface must answer each shape with a 4xx in its own error format (problem+json with a
``code`` on ``/v1``, the compat surface's ``{"error": ...}`` elsewhere), never a 5xx, and
store nothing. The last test runs a real server and checks that ``/healthz`` keeps answering
while the shapes that once froze it are in flight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import pytest

from keyplane.domain import money
from keyplane.services.vault import MAX_LIMIT
from tests.conftest import ROOT_KEY, Api
from tests.e2e.conftest import Server
from tests.hostile import decimals
from tests.hostile.responsive import assert_stays_responsive


@dataclass(frozen=True)
class Target:
    """What the surfaces act on: an API key (plaintext, id, hash)."""

    key: str
    key_id: str
    key_hash: str


@dataclass(frozen=True)
class BodySurface:
    """A route whose JSON body carries an amount; ``template`` has ``{amount}`` for it."""

    name: str
    method: str
    path: str
    template: str
    compat: bool = False


#: Every route that takes an amount in its body. A new one gets a row here.
SURFACES: tuple[BodySurface, ...] = (
    BodySurface("verify cost", "POST", "/v1/verify", '{{"key": "{key}", "cost": {amount}}}'),
    BodySurface(
        "usage cost",
        "POST",
        "/v1/usage",
        '{{"key_id": "{key_id}", "request_id": "hostile", "cost": {amount}}}',
    ),
    BodySurface(
        "key budget credit_limit",
        "POST",
        "/v1/keys",
        '{{"name": "h", "policy": {{"budget": {{"credit_limit": {amount}}}}}}}',
    ),
    BodySurface(
        "key budget per_model",
        "PATCH",
        "/v1/keys/{key_id}",
        '{{"policy": {{"budget": {{"per_model": {{"gpt-*": {amount}}}}}}}}}',
    ),
    BodySurface(
        "plan budget credit_limit",
        "POST",
        "/v1/plans",
        '{{"name": "hostile", "policy": {{"budget": {{"credit_limit": {amount}}}}}}}',
    ),
    BodySurface(
        "plan update credit_limit",
        "PATCH",
        "/v1/plans/base",
        '{{"policy": {{"budget": {{"credit_limit": {amount}}}}}}}',
    ),
    BodySurface(
        "openrouter create limit",
        "POST",
        "/api/v1/keys",
        '{{"name": "h", "limit": {amount}}}',
        compat=True,
    ),
    BodySurface(
        "openrouter update limit",
        "PATCH",
        "/api/v1/keys/{key_hash}",
        '{{"limit": {amount}}}',
        compat=True,
    ),
    BodySurface(
        "fastrouter create credit_limit",
        "POST",
        "/prod/createServiceKey",
        '{{"api_key_name": "h", "credit_limit": {amount}}}',
        compat=True,
    ),
    BodySurface(
        "fastrouter update credit_limit",
        "POST",
        "/prod/updateServiceKey",
        '{{"api_key_id_hash": "{key_hash}", "credit_limit": {amount}}}',
        compat=True,
    ),
)

#: The vault takes counts, not credits: the same shapes must not hurt it, though an integer
#: within its range is a valid count there.
VAULT = BodySurface(
    "vault daily_limit",
    "POST",
    "/v1/vault/credentials",
    '{{"provider": "openai", "alias": "h", "secret": "sk-hostile-0123456789",'
    ' "daily_limit": {amount}}}',
)


async def _target(api: Api) -> Target:
    response = await api.client.post("/v1/plans", json={"name": "base", "policy": {}})
    assert response.status_code == 201, response.text
    key, data = await api.create_key(policy={"budget": {"credit_limit": 5}})
    return Target(key, str(data["id"]), str(data["hash"]))


async def _send(api: Api, surface: BodySurface, target: Target, amount_json: str) -> httpx.Response:
    fields = {"key": target.key, "key_id": target.key_id, "key_hash": target.key_hash}
    body = surface.template.format(amount=amount_json, **fields)
    return await api.client.request(
        surface.method,
        surface.path.format(**fields),
        content=body.encode(),
        headers={"Content-Type": "application/json"},
    )


def _assert_refused(surface: BodySurface, shape: str, response: httpx.Response) -> None:
    where = f"{surface.name} <- {shape[:40]!r}"
    assert 400 <= response.status_code < 500, f"{where}: {response.status_code} {response.text}"
    if surface.compat:
        assert "error" in response.json(), where
    else:
        assert response.headers["content-type"] == "application/problem+json", where
        assert response.json()["code"], where
    assert "Traceback" not in response.text, where


async def _stored(api: Api) -> tuple[object, ...]:
    keys = (await api.client.get("/v1/keys")).json()["data"]
    plans = (await api.client.get("/v1/plans")).json()["data"]
    credentials = (await api.client.get("/v1/vault/credentials")).json()["data"]
    return (
        sorted((k["id"], json.dumps(k.get("policy"), sort_keys=True)) for k in keys),
        sorted(json.dumps(p, sort_keys=True) for p in plans),
        len(credentials),
        (await api.client.get(f"/v1/keys/{keys[0]['id']}")).json()["data"]["usage"],
    )


@pytest.mark.parametrize("surface", SURFACES, ids=lambda s: s.name)
async def test_every_hostile_amount_is_refused_on_every_surface(
    api: Api, surface: BodySurface
) -> None:
    target = await _target(api)
    before = await _stored(api)
    for text in decimals.TEXT:
        _assert_refused(surface, text, await _send(api, surface, target, json.dumps(text)))
    for literal in decimals.JSON_NUMBERS:
        _assert_refused(surface, literal, await _send(api, surface, target, literal))
    assert await _stored(api) == before, "a refused amount changed something"
    # Read as 0 by any JSON parser: a valid request (a limit of 0) or a refusal, not a 5xx.
    for literal in decimals.JSON_NUMBERS_READ_AS_ZERO:
        response = await _send(api, surface, target, literal)
        assert response.status_code < 500, f"{surface.name} <- {literal}: {response.text}"


async def test_hostile_numbers_are_refused_as_vault_counts(api: Api) -> None:
    target = await _target(api)
    for text in decimals.TEXT:
        _assert_refused(VAULT, text, await _send(api, VAULT, target, json.dumps(text)))
    for literal in decimals.JSON_NUMBERS:
        try:
            value = json.loads(literal)
        except ValueError:
            value = None
        # A valid count: an integer, or a number JSON Schema calls one (1e13 is 10^13).
        integral = type(value) is int or (type(value) is float and value.is_integer())
        if integral and 0 <= value <= MAX_LIMIT:
            continue
        _assert_refused(VAULT, literal, await _send(api, VAULT, target, literal))
    stored = (await api.client.get("/v1/vault/credentials")).json()["data"]
    assert all(0 <= credential["daily_limit"] <= MAX_LIMIT for credential in stored), stored


async def test_hostile_cost_headers_are_refused_on_forward_auth(api: Api) -> None:
    target = await _target(api)
    # Header values travel without leading or trailing whitespace (RFC 9110 5.5), and an
    # empty one means "no cost": those shapes do not reach the server as written.
    shapes = [text for text in decimals.TEXT if text.strip() == text and text]
    for text in shapes:
        response = await api.client.get(
            "/v1/auth",
            headers={
                "X-Keyplane-Gateway-Key": ROOT_KEY,
                "Authorization": f"Bearer {target.key}",
                "X-Keyplane-Cost": text.encode(),  # type: ignore[dict-item]
            },
        )
        assert response.status_code == 400, f"{text[:40]!r}: {response.text}"
        assert response.json()["code"] == "INVALID_HEADER"


@pytest.mark.parametrize(("amount", "micros"), decimals.VALID)
async def test_plain_amounts_keep_working(api: Api, amount: object, micros: int) -> None:
    response = await api.client.post(
        "/v1/plans", json={"name": "p", "policy": {"budget": {"credit_limit": amount}}}
    )
    assert response.status_code == 201, response.text
    shown = response.json()["data"]["policy"]["budget"]["credit_limit"]
    assert shown == money.to_credits(micros)


def test_the_domain_parser_refuses_every_text_shape() -> None:
    for text in decimals.TEXT:
        try:
            micros = money.to_micros(text)
        except ValueError:
            continue
        assert micros < 0, f"{text[:40]!r} was read as {micros}"


# -- a real server stays responsive -----------------------------------------------------------


@pytest.mark.e2e
def test_healthz_answers_while_hostile_amounts_are_in_flight(server: Server) -> None:
    """The original stalls: 8 s on /v1/verify, 37 s on /v1/auth, a 500 for 1e1000000."""
    with server.client() as client:
        created = client.post("/v1/keys", json={"name": "victim"})
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["data"]["id"]
        gateway = client.post(
            "/v1/management-keys", json={"name": "gateway", "scopes": ["verify"]}
        ).json()["key"]

    def hostile() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
            bearer = {"Authorization": f"Bearer {gateway}"}
            for cost in ("1e200000", "9e999992", "1e1000000"):
                verify = client.post("/v1/verify", json={"key": key, "cost": cost}, headers=bearer)
                assert verify.status_code == 422, verify.text
                auth = client.get(
                    "/v1/auth",
                    headers={
                        "Authorization": f"Bearer {key}",
                        "X-Keyplane-Gateway-Key": gateway,
                        "X-Keyplane-Cost": cost,
                    },
                )
                assert auth.status_code == 400, auth.text
            # A verify-only key, on a route it has no scope for: refused before parsing.
            usage = client.post(
                "/v1/usage",
                json={"key_id": key_id, "request_id": "r", "cost": "1e200000"},
                headers=bearer,
            )
            assert usage.status_code == 403, usage.text

    assert_stays_responsive(server.base_url, hostile)
