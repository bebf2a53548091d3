"""Every request gets an id (X-Request-Id) and one structured access log line without secrets."""

from __future__ import annotations

import json
import logging

import pytest

from keyplane.logging_config import JsonFormatter
from tests.conftest import Api


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(record))
        for record in caplog.records
        if record.name == "keyplane.access"
    ]


async def test_each_request_logs_one_json_line_with_its_id_route_and_principal(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    key, data = await api.create_key()
    caplog.set_level(logging.INFO, logger="keyplane.access")
    # The key in the path and in the body: neither may reach the log.
    response = await api.client.get(f"/v1/keys/{key}")
    verified = await api.client.post("/v1/verify", json={"key": key})
    assert verified.status_code == 200
    lines = access_lines(caplog)
    assert len(lines) == 2
    first, second = lines
    assert first["route"] == "/v1/keys/{id_or_hash}"
    assert first["status"] == response.status_code
    assert first["request_id"] == response.headers["x-request-id"]
    assert second["route"] == "/v1/verify"
    assert second["method"] == "POST"
    assert second["status"] == 200
    assert second["request_id"] == verified.headers["x-request-id"]
    assert isinstance(second["latency_ms"], float) and second["latency_ms"] >= 0
    assert second["principal_id"] == "root"  # the configured root key's id
    text = "\n".join(json.dumps(line) for line in lines)
    assert key not in text
    assert data["hash"] not in text
    assert "Bearer" not in text


async def test_a_sane_inbound_request_id_is_kept_and_any_other_replaced(api: Api) -> None:
    kept = await api.client.get("/healthz", headers={"X-Request-Id": "gw-01.trace:42_x"})
    assert kept.headers["x-request-id"] == "gw-01.trace:42_x"
    for bad in ("a" * 65, "has space", "semi;colon", "é"):
        response = await api.client.get("/healthz", headers={"X-Request-Id": bad.encode()})
        assert response.status_code == 200
        assert response.headers["x-request-id"] != bad
        assert len(response.headers["x-request-id"]) == 24
    made = {(await api.client.get("/healthz")).headers["x-request-id"] for _ in range(20)}
    assert len(made) == 20  # each request its own
    assert all(len(made_id) == 24 and int(made_id, 16) >= 0 for made_id in made)  # 96 bits, hex


async def test_errors_and_unmatched_paths_are_logged_and_carry_an_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyplane.access")
    missing = await api.client.get("/no/such/kp_live_path")
    refused = await api.client.get("/v1/keys", headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 404 and refused.status_code == 401
    assert missing.headers["x-request-id"] and refused.headers["x-request-id"]
    lines = access_lines(caplog)
    assert [(line["route"], line["status"]) for line in lines] == [
        ("<unmatched>", 404),
        ("/v1/keys", 401),
    ]
    assert lines[1]["principal_id"] is None


async def test_a_key_sent_as_request_id_is_neither_kept_nor_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    key, _data = await api.create_key()
    caplog.set_level(logging.INFO, logger="keyplane.access")
    response = await api.client.get("/healthz", headers={"X-Request-Id": key})
    assert response.headers["x-request-id"] != key
    assert key not in json.dumps(access_lines(caplog))
    odd = await api.client.request("BREW", "/healthz")
    assert odd.status_code == 405
    assert access_lines(caplog)[-1]["method"] == "OTHER"
