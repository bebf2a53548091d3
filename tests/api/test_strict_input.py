"""Input is taken as written: no coercion of types, no silently ignored parameters."""

from __future__ import annotations

import pytest

from tests.conftest import Api


# 60.0 is an integer to JSON Schema, and so to the OpenAPI document: it is taken as 60
# (tests/api/test_openapi_truth.py).
@pytest.mark.parametrize("value", ["60", True, 60.5])
async def test_integer_fields_refuse_strings_booleans_and_fractions(
    api: Api, value: object
) -> None:
    _, data = await api.create_key()
    response = await api.client.post(
        f"/v1/keys/{data['id']}/rotate", json={"grace_period_seconds": value}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "VALIDATION_FAILED"
    assert (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"] == data


async def test_expiry_must_be_an_iso_timestamp_not_epoch_seconds(api: Api) -> None:
    response = await api.client.post("/v1/keys", json={"name": "x", "expires_at": 4102444800})
    assert response.status_code == 422
    ok = await api.client.post("/v1/keys", json={"name": "x", "expires_at": "2100-01-01T00:00Z"})
    assert ok.status_code == 201


async def test_metadata_filters_are_refused_where_they_do_not_apply(api: Api) -> None:
    response = await api.client.get("/v1/management-keys", params={"metadata.team": "ml"})
    assert response.status_code == 422
    assert response.json()["code"] == "UNKNOWN_PARAMETER"


async def test_unknown_parameter_names_are_not_echoed_raw(api: Api) -> None:
    response = await api.client.get("/v1/keys?bad%1b%5b31mname=1")
    assert response.status_code == 422
    assert "\x1b" not in response.json()["detail"]
    assert "\\x1b" in response.json()["detail"]


@pytest.mark.parametrize("body", [b"3.5", b"3.487136859879035e+241", b'{"policy": 2.5}'])
async def test_a_number_never_passes_for_an_object(api: Api, body: bytes) -> None:
    # FastAPI validates bodies from attributes: a parsed number (the exact-money float
    # subclass) once passed for a model whose fields all default, and revoked the key.
    _, data = await api.create_key()
    headers = {"content-type": "application/json"}
    for method in ("DELETE", "PATCH"):
        response = await api.client.request(
            method, f"/v1/keys/{data['id']}", content=body, headers=headers
        )
        assert response.status_code == 422, (method, response.text)
    assert (await api.client.get(f"/v1/keys/{data['id']}")).json()["data"] == data
