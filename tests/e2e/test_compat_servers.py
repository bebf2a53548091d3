"""The FastRouter surface (``/prod``, seed 001) end to end, against a real server process.

(The OpenRouter / AnyAPI surface runs end to end in ``test_seed_clients.py``, through the seed's
own client code.)
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

# The createServiceKey example of seed 001, as it is written there.
SEED_EXAMPLE = {
    "api_key_name": "ci-pipeline",
    "project_name": "Production",
    "models": ["openai/gpt-5.5"],
    "credit_limit": 150,
    "reset_budget_interval": "daily",
    "tags": ["ci", "prod"],
}


def test_a_service_key_lives_and_dies_through_the_fastrouter_api(live_server: Server) -> None:
    with live_server.client() as http:
        made = http.post("/v1/projects", json={"name": "Production", "key_prefix": "prod"})
        assert made.status_code in (201, 409), made.text  # one project per module's server
        created = http.post("/prod/createServiceKey", json={**SEED_EXAMPLE, "rpm_limit": 2})
        assert created.status_code == 201, created.text
        body = created.json()
        secret, key_hash = body["api_key"], body["api_key_id_hash"]
        assert secret.startswith("prod_live_")

        def verify(model: str) -> str:
            answer = http.post("/v1/verify", json={"key": secret, "model": model})
            assert answer.status_code == 200, answer.text
            code: str = answer.json()["code"]
            return code

        # The seed's fields are enforced by verify: models, then 2 requests per minute.
        assert verify("anthropic/claude-3") == "FORBIDDEN_MODEL"
        assert [verify("openai/gpt-5.5") for _ in range(3)] == ["VALID", "VALID", "RATE_LIMITED"]

        listed = http.get("/prod/getServiceKeys").json()["service_keys"]
        mine = [k for k in listed if k["api_key_id_hash"] == key_hash]
        assert len(mine) == 1 and mine[0]["credit_limit"] == 150
        assert secret not in http.get("/prod/getServiceKeys").text

        updated = http.post(
            "/prod/updateServiceKey",
            json={"api_key_id_hash": key_hash, "models": ["anthropic/*"], "rpm_limit": None},
        )
        assert updated.status_code == 200, updated.text
        assert verify("anthropic/claude-3") == "VALID"

        deleted = http.post("/prod/deleteServiceKey", json={"api_key_id_hash": key_hash})
        assert deleted.json() == {"deleted": True, "api_key_id_hash": key_hash}
        assert verify("anthropic/claude-3") == "REVOKED"
        again = http.post("/prod/deleteServiceKey", json={"api_key_id_hash": key_hash})
        assert again.status_code == 404 and set(again.json()) == {"error"}


def test_bad_input_on_the_fastrouter_api_is_a_clear_400(live_server: Server) -> None:
    with live_server.client() as http:
        for body in (
            b"{not json",
            b'{"api_key_name": 5}',
            b'{"api_key_name": "x", "credit_limit": -1}',
        ):
            response = http.post(
                "/prod/createServiceKey",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 400, (body, response.text)
            assert "Traceback" not in response.text
            assert set(response.json()["error"]) == {"message", "type", "code"}
