"""Hostile regular expressions: user-agent rules written by a tenant, matched against a
User-Agent written by anyone.

``^\\d*\\d*(\\d){1000}x`` was once accepted as a policy's ``user_agent``; each verify with a
1,024-digit User-Agent then took 17-25 s and froze ``/healthz``. Rules are now matched by
RE2 (linear time) with bounds on pattern length, program size and subject length
(``keyplane.domain.safe_regex``). Every surface that takes a pattern gets every shape below:
``REFUSED`` must be a 422 problem+json at write time, ``ACCEPTED`` must be stored and then
verified quickly against ``hostile_user_agents`` while ``/healthz`` keeps answering.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from keyplane.domain.safe_regex import MAX_PATTERN_LENGTH, MAX_SUBJECT_LENGTH
from tests.conftest import ROOT_KEY, Api
from tests.e2e.conftest import Server
from tests.hostile.responsive import assert_stays_responsive

#: (pattern, what the refusal says): refused when a policy is written.
REFUSED: list[tuple[str, str]] = [
    # The example: harmless for RE2, but 3,000 instructions of NFA per character.
    (r"^\d*\d*(\d){1000}x", "too complex"),
    (r"(.*){1,1000}(.*){1,1000}x", "too complex"),
    ("a{1000}{1000}", "not supported"),
    ("(a{999}){999}", "not supported"),
    (r"(a)\1", "not supported"),
    ("(?P<x>a)(?P=x)", "not supported"),
    ("(?=a)a", "not supported"),
    ("(?<!a)b", "not supported"),
    ("(?>a+)b", "not supported"),
    ("a++b", "not supported"),
    ("(?(1)a|b)", "not supported"),
    ("(", "not supported"),
    ("[z-a]", "not supported"),
    ("a" * (MAX_PATTERN_LENGTH + 1), "at most"),  # pydantic's length check speaks first
    ("(" * 128 + ")" * 127, "not supported"),
]

#: Classic catastrophic-backtracking shapes: linear in RE2, so accepted, and each is then
#: verified against every subject in ``hostile_user_agents()``.
ACCEPTED: list[str] = [
    "(a+)+$",
    "(a|a)*$",
    "(a|aa)+$",
    "(.*a){20}",
    r"(\w+\s?)*$",
    r"\d*\d*\d*\d*\d*x",
    "((((a*)*)*)*)*$",
    r"^(\d+)*$",
    "(?i)(x+x+)+y",
    r"(.*){1,20}(.*){1,20}x",
]


def hostile_user_agents() -> list[str]:
    """Subjects that made backtracking engines explode: near-matches that fail at the end."""
    n = MAX_SUBJECT_LENGTH
    return ["1" * n, "a" * (n - 1) + "!", "x" * n, "a " * (n // 2), ("ab" * n)[:n]]


def _key_body(pattern: str) -> dict[str, Any]:
    return {"name": "ua", "policy": {"network": {"user_agent": pattern}}}


def _plan_body(pattern: str) -> dict[str, Any]:
    return {"name": "ua-plan", "policy": {"network": {"user_agent": pattern}}}


def _assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert re.search(re.escape(reason), body["detail"]), body
    assert "Traceback" not in response.text


# -- write time: every surface that takes a pattern ------------------------------------------


@pytest.mark.parametrize(("pattern", "reason"), REFUSED)
async def test_refused_patterns_are_422_on_every_surface(
    api: Api, pattern: str, reason: str
) -> None:
    _assert_refused(await api.client.post("/v1/keys", json=_key_body(pattern)), reason)
    _key, data = await api.create_key(name="plain")
    patch = {"policy": {"network": {"user_agent": pattern}}}
    _assert_refused(await api.client.patch(f"/v1/keys/{data['id']}", json=patch), reason)
    _assert_refused(await api.client.post("/v1/plans", json=_plan_body(pattern)), reason)
    assert (await api.client.post("/v1/plans", json={"name": "p"})).status_code == 201
    _assert_refused(await api.client.patch("/v1/plans/p", json=patch), reason)


async def test_refused_patterns_are_422_for_a_project_bound_key(api: Api) -> None:
    project = await api.client.post("/v1/projects", json={"name": "P", "key_prefix": "pp"})
    assert project.status_code == 201, project.text
    writer = await api.management_key(
        "keys:write", "keys:read", project_id=project.json()["data"]["id"]
    )
    for pattern, reason in REFUSED:
        response = await api.client.post(
            "/v1/keys", json=_key_body(pattern), headers=api.as_key(writer)
        )
        _assert_refused(response, reason)


@pytest.mark.parametrize("pattern", ACCEPTED)
async def test_accepted_shapes_are_stored_and_verified_against_hostile_agents(
    api: Api, pattern: str
) -> None:
    key, _data = await api.create_key(**_key_body(pattern))
    for agent in hostile_user_agents():
        result = await api.verify(key, user_agent=agent)
        expected = re.search(pattern, agent) is not None if len(agent) < 64 else None
        assert result["code"] in {"VALID", "USER_AGENT_NOT_ALLOWED"}, result
        if expected is not None:
            assert result["valid"] is expected
    # An over-long agent never matches, whatever the pattern (fail closed).
    result = await api.verify(key, user_agent="a" * (MAX_SUBJECT_LENGTH + 1))
    assert result["code"] == "USER_AGENT_NOT_ALLOWED"


# -- a real server stays responsive ------------------------------------------------------------


@pytest.mark.e2e
def test_the_server_stays_responsive_while_hostile_agents_are_verified(
    server: Server,
) -> None:
    with server.client() as client:
        for pattern, _reason in REFUSED[:2]:
            response = client.post("/v1/keys", json=_key_body(pattern))
            assert response.status_code == 422, response.text
        keys = []
        for pattern in ACCEPTED:
            response = client.post("/v1/keys", json=_key_body(pattern))
            assert response.status_code == 201, response.text
            keys.append(response.json()["key"])
    agents = hostile_user_agents()

    def hostile() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
            for key in keys:
                for agent in agents:
                    response = client.post(
                        "/v1/verify",
                        json={"key": key, "user_agent": agent},
                        headers={"Authorization": f"Bearer {ROOT_KEY}"},
                    )
                    assert response.status_code == 200, response.text
                # The forward-auth surface reads the real User-Agent header.
                response = client.get(
                    "/v1/auth",
                    headers={
                        "Authorization": f"Bearer {key}",
                        "X-Keyplane-Gateway-Key": ROOT_KEY,
                        "User-Agent": agents[0],
                    },
                )
                assert response.status_code in (200, 403), response.text

    assert_stays_responsive(server.base_url, hostile)
