from __future__ import annotations

import keyplane
from tests import scrape
from tests.conftest import Api


async def test_projects_create_list_get(api: Api) -> None:
    response = await api.client.post("/v1/projects", json={"name": "fr", "key_prefix": "sk-fr"})
    assert response.status_code == 201
    project = response.json()["data"]
    assert project["key_prefix"] == "sk-fr"
    names = [p["name"] for p in (await api.client.get("/v1/projects")).json()["data"]]
    assert names == ["default", "fr"]
    fetched = await api.client.get(f"/v1/projects/{project['id']}")
    assert fetched.json()["data"] == project
    duplicate = await api.client.post("/v1/projects", json={"name": "fr"})
    assert duplicate.status_code == 409
    bad_prefix = await api.client.post("/v1/projects", json={"name": "y", "key_prefix": "Sk"})
    assert bad_prefix.status_code == 422


async def test_health_and_readiness(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.json() == {"status": "ok", "version": keyplane.__version__}
    assert response.headers["keyplane-version"] == keyplane.__version__
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}


async def test_openapi_is_3_1_and_lists_the_management_api(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    for path in (
        "/v1/keys",
        "/v1/keys/{id_or_hash}",
        "/v1/keys/{id_or_hash}/rotate",
        "/v1/verify",
        "/v1/management-keys",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"]


async def test_metrics_count_verdicts_and_usage_without_secrets(api: Api) -> None:
    # The counters are the process's: other tests' counts are in them too, so compare.
    before = scrape.parse((await api.client.get("/metrics", headers={"Authorization": ""})).text)
    key, data = await api.create_key()
    await api.verify(key)
    await api.verify("garbage")
    response = await api.report(key_id=data["id"], request_id="m1", cost=1)
    assert response.status_code == 201
    metrics = await api.client.get("/metrics", headers={"Authorization": ""})
    assert metrics.headers["content-type"].startswith("text/plain; version=")
    text = metrics.text
    after = scrape.parse(text)

    def grew(name: str, **labels: str) -> float:
        return scrape.value(after, name, **labels) - scrape.value(before, name, **labels)

    assert grew("keyplane_verify_total", code="VALID") == 1
    assert grew("keyplane_verify_total", code="MALFORMED") == 1
    assert grew("keyplane_usage_reports_total") == 1
    assert grew("keyplane_usage_transactions_total") == 1
    assert grew("keyplane_usage_batch_size_count") == 1
    assert grew("keyplane_key_cache_hits_total") + grew("keyplane_key_cache_misses_total") >= 1
    assert grew("keyplane_store_duration_seconds_count", kind="write") >= 1
    assert (
        grew(
            "keyplane_http_request_duration_seconds_count",
            method="POST",
            route="/v1/verify",
            status="200",
        )
        == 2
    )
    families = scrape.types(text)
    assert families["keyplane_key_cache_hits"] == "counter"
    assert families["keyplane_http_request_duration_seconds"] == "histogram"
    assert families["keyplane_limiter_duration_seconds"] == "histogram"
    assert "process_cpu_seconds" in families  # process metrics, in single-process mode
    assert key not in text and data["hash"] not in text
