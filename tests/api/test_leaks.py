"""Leak response over HTTP: GitHub secret scanning with a locally generated reporter key
(valid, forged, unknown and missing signatures), the per-project action (revoke, disable,
notify; rotate through the rotation service, the new secret held for the operator), operator
reports with their scope and tenancy, bounded bodies, and no token anywhere it is echoed."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyplane.api.app import create_app
from keyplane.domain import keyformat
from keyplane.domain.clock import ManualClock
from tests.api.test_organizations import second_org
from tests.conftest import ROOT_KEY, Api, Database

_IDENTIFIER = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
_REPORTER = ec.generate_private_key(ec.SECP256R1())
_STRANGER = ec.generate_private_key(ec.SECP256R1())
_PEM = (
    _REPORTER.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
# GitHub's own document format (/meta/public_keys/secret_scanning), as an operator saves it.
_KEYS = json.dumps(
    {"public_keys": [{"key_identifier": _IDENTIFIER, "key": _PEM, "is_current": True}]}
)
_PATH = "/v1/secret-scanning/github"


@pytest.fixture
async def api(database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    async for api in _api(database, clock):
        yield api


@pytest.fixture
async def sqlite_api(sqlite_database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    """For tests whose SQL the others already run on both backends (the suite is slow)."""
    async for api in _api(sqlite_database, clock):
        yield api


async def _api(database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    app = create_app(database.settings(secret_scanning_keys=_KEYS), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, database)


def _signed(body: bytes, key: ec.EllipticCurvePrivateKey = _REPORTER) -> dict[str, str]:
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    return {
        "Github-Public-Key-Identifier": _IDENTIFIER,
        "Github-Public-Key-Signature": signature,
        "Content-Type": "application/json",
        "Authorization": "",  # no management key: the signature is the credential
    }


def _report(*tokens: str) -> bytes:
    url = "https://github.com/octocat/hello/blob/1234567/app.py"
    items = [
        {"token": t, "type": "keyplane_api_key", "url": url, "source": "content"} for t in tokens
    ]
    return json.dumps(items).encode()


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _status(api: Api, key_id: str) -> str:
    return str((await api.client.get(f"/v1/keys/{key_id}")).json()["data"]["status"])


async def _leak_events(api: Api) -> list[dict[str, Any]]:
    response = await api.client.get("/v1/audit", params={"action": "security.key_leaked"})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


async def test_github_report_labels_tokens_and_revokes_by_default(api: Api) -> None:
    secret, key = await api.create_key(name="leaky")
    lookalike = secret[:-1] + ("A" if secret[-1] != "A" else "B")  # checksum breaks
    unknown = keyformat.generate(keyformat.KeyKind.LIVE, "kp").text  # well formed, not issued
    body = _report(secret, lookalike, "not a key at all", secret)
    response = await api.client.post(_PATH, content=body, headers=_signed(body))
    assert response.status_code == 200, response.text
    labels = response.json()
    assert [item["label"] for item in labels] == [
        "true_positive",
        "false_positive",
        "false_positive",
        "true_positive",
    ]
    assert labels[0] == {
        "token_hash": _sha(secret),
        "token_type": "keyplane_api_key",
        "label": "true_positive",
    }
    assert secret not in response.text
    assert await _status(api, key["id"]) == "revoked"
    refused = await api.client.post("/v1/verify", json={"key": secret})
    assert refused.json()["valid"] is False
    events = await _leak_events(api)
    assert len(events) == 1  # reported twice in one batch, acted on once
    assert events[0]["actor"]["type"] == "system"
    details = events[0]["details"]
    assert (
        details["url"].startswith("https://github.com/octocat/") and details["action"] == "revoke"
    )
    audit = (await api.client.get("/v1/audit")).text
    assert secret not in audit and secret[8:-6] not in audit
    body = _report(unknown)
    again = await api.client.post(_PATH, content=body, headers=_signed(body))
    assert again.json()[0]["label"] == "false_positive"


async def test_forged_unknown_and_missing_signatures_are_refused(sqlite_api: Api) -> None:
    api = sqlite_api
    secret, key = await api.create_key(name="target")
    body = _report(secret)
    forged = _signed(body, _STRANGER)
    tampered = _signed(body + b" ")
    unknown = _signed(body) | {"Github-Public-Key-Identifier": "f" * 64}
    garbage = _signed(body) | {"Github-Public-Key-Signature": "%%%not base64%%%"}
    missing = {"Content-Type": "application/json", "Authorization": ""}
    for headers, content in (
        (forged, body),
        (tampered, body),
        (unknown, body),
        (garbage, body),
        (missing, body),
    ):
        response = await api.client.post(_PATH, content=content, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert secret not in response.text
    assert await _status(api, key["id"]) == "active"
    for bad in (b"{", b"[]", json.dumps([{"token": "x" * 513}]).encode(), _report("a") * 2):
        response = await api.client.post(_PATH, content=bad, headers=_signed(bad))
        assert response.status_code == 422, (bad[:40], response.text)
        assert "x" * 100 not in response.text
    many = _report(*["kp_live_x"] * 101)
    assert (await api.client.post(_PATH, content=many, headers=_signed(many))).status_code == 422


async def test_each_project_action(api: Api) -> None:
    project = (await api.client.post("/v1/projects", json={"name": "leaky"})).json()["data"]
    path = f"/v1/projects/{project['id']}/leak-response"
    assert (await api.client.get(path)).json()["data"]["action"] == "revoke"
    assert (await api.client.put(path, json={"action": "sideways"})).status_code == 422
    outcomes = {}
    for action in ("disable", "notify"):
        assert (await api.client.put(path, json={"action": action})).status_code == 200
        secret, key = await api.create_key(name=action, project_id=project["id"])
        body = _report(secret)
        response = await api.client.post(_PATH, content=body, headers=_signed(body))
        assert response.json()[0]["label"] == "true_positive"
        outcomes[action] = await _status(api, key["id"])
    assert outcomes == {"disable": "disabled", "notify": "active"}
    assert [e["details"]["action"] for e in await _leak_events(api)] == ["notify", "disable"]

    # rotate: the rotation service holds the new secret for the operator (never the leaker).
    assert (await api.client.put(path, json={"action": "rotate"})).status_code == 200
    secret, key = await api.create_key(name="rotate", project_id=project["id"])
    body = _report(secret)
    await api.client.post(_PATH, content=body, headers=_signed(body))
    verdict = await api.client.post("/v1/verify", json={"key": secret})
    assert verdict.json()["code"] == "VALID"  # the leaked secret works for the short grace
    assert verdict.json()["rotation_pending"] is True
    own = await api.client.post(
        "/v1/self/rotation/claim", headers={"Authorization": f"Bearer {secret}"}
    )
    assert own.status_code in (401, 403, 409), own.text  # the leaked key cannot claim it
    claimed = await api.client.post(f"/v1/keys/{key['id']}/rotation/claim")
    assert claimed.status_code == 200, claimed.text
    new_secret = claimed.json()["key"]
    assert new_secret != secret
    assert (await api.client.post("/v1/verify", json={"key": new_secret})).json()["valid"]
    api.clock.advance(3601)
    assert (await api.client.post("/v1/verify", json={"key": secret})).json()["valid"] is False
    changed = await api.client.get("/v1/audit", params={"action": "project.leak_response.updated"})
    assert len(changed.json()["data"]) == 3


async def test_operator_reports_need_their_scope_and_stay_in_their_org(sqlite_api: Api) -> None:
    api = sqlite_api
    secret, key = await api.create_key(name="ours")
    body = _report(secret)
    reader = await api.management_key("keys:read", "keys:write")
    denied = await api.client.post("/v1/leaked-keys", content=body, headers=api.as_key(reader))
    assert denied.status_code == 403
    two = await second_org(api)
    theirs = await api.client.post("/v1/leaked-keys", content=body, headers=two.headers)
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["data"][0]["label"] == "false_positive"
    assert await _status(api, key["id"]) == "active"
    reporter = await api.management_key("keys:leaked")
    ours = await api.client.post("/v1/leaked-keys", content=body, headers=api.as_key(reporter))
    assert ours.json() == {
        "data": [
            {"token_hash": _sha(secret), "token_type": "keyplane_api_key", "label": "true_positive"}
        ]
    }
    assert await _status(api, key["id"]) == "revoked"
    [event] = await _leak_events(api)
    assert event["actor"]["type"] == "management_key" and event["details"]["reporter"] == "operator"
