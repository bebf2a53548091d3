"""Network and transport rules on verify and forward auth: HTTPS, countries (from the gateway,
a trusted header or a GeoIP database), user-agent globs and domains; hostile policies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from tests import mmdb
from tests.conftest import ROOT_KEY, Api, Database

GATEWAY = {"X-Keyplane-Gateway-Key": ROOT_KEY}


@pytest.fixture
async def geo_api(database: Database, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Api]:
    """The API with a GeoIP database, CF-IPCountry and 127.0.0.1 (the test client) trusted."""
    geoip = mmdb.write(
        tmp_path / "countries.mmdb", {"203.0.113.0/24": "DE", "198.51.100.0/24": "FR"}
    )
    settings = database.settings(
        geoip_database=geoip, country_header="CF-IPCountry", trusted_proxies=("127.0.0.1",)
    )
    app = create_app(settings, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, database)


async def codes(api: Api, key: str, *contexts: dict[str, object]) -> list[object]:
    return [(await api.verify(key, **context))["code"] for context in contexts]


async def test_each_network_rule_on_verify(geo_api: Api) -> None:
    api = geo_api
    key, data = await api.create_key(policy={"network": {"require_https": True}})
    assert data["policy"] == {"network": {"require_https": True}}
    assert await codes(api, key, {}, {"scheme": "http"}, {"scheme": "https"}) == [
        "HTTPS_REQUIRED",
        "HTTPS_REQUIRED",
        "VALID",
    ]

    allow, _ = await api.create_key(policy={"network": {"countries_allow": ["de", "AT"]}})
    assert await codes(api, allow, {"country": "DE"}, {"country": "at"}, {"country": "FR"}, {}) == [
        "VALID",
        "VALID",
        "COUNTRY_NOT_ALLOWED",
        "COUNTRY_NOT_ALLOWED",  # unknown: fail closed
    ]
    # Not told the country, verify asks the GeoIP database for the IP's.
    assert await codes(
        api,
        allow,
        {"ip": "203.0.113.9"},
        {"ip": "198.51.100.1"},
        {"ip": "192.0.2.1"},  # in no network of the database
        {"ip": "198.51.100.1", "country": "DE"},  # the gateway's word comes first
    ) == ["VALID", "COUNTRY_NOT_ALLOWED", "COUNTRY_NOT_ALLOWED", "VALID"]
    deny, data = await api.create_key(policy={"network": {"countries_deny": ["XX", "yy"]}})
    assert data["policy"]["network"]["countries_deny"] == ["XX", "YY"]  # type: ignore[index]
    assert await codes(api, deny, {"country": "DE"}, {"country": "YY"}) == [
        "VALID",
        "COUNTRY_NOT_ALLOWED",
    ]

    agents, _ = await api.create_key(
        policy={"network": {"user_agents": ["YourApp/*", "curl/?.*"], "user_agent": "^YourApp"}}
    )
    assert (
        await codes(
            api,
            agents,
            {"user_agent": "YourApp/2.1"},
            {"user_agent": "yourapp/2.1"},  # globs ignore case, the pattern does not
            {"user_agent": "curl/8.4"},  # a glob matches, the pattern does not
            {"user_agent": "Other/1"},
            {},
        )
        == ["VALID"] + ["USER_AGENT_NOT_ALLOWED"] * 4
    )
    only_globs, _ = await api.create_key(policy={"network": {"user_agents": ["curl/?.*"]}})
    assert await codes(api, only_globs, {"user_agent": "curl/8.4"}) == ["VALID"]

    domains, _ = await api.create_key(
        policy={"network": {"domains": ["app.company.com", "*.Company.com"]}}
    )
    assert await codes(
        api,
        domains,
        {"origin": "https://app.company.com"},
        {"origin": "http://a.b.company.com:8080"},
        {"referrer": "https://www.company.com/page?q=1"},
        {"origin": "https://company.com"},  # *.company.com is not company.com
        {"origin": "https://evilcompany.com"},
        {"origin": "https://company.com.evil.net"},
        {"origin": "null", "referrer": "https://app.company.com/x"},
        {},
    ) == ["VALID", "VALID", "VALID"] + ["DOMAIN_NOT_ALLOWED"] * 3 + ["VALID", "DOMAIN_NOT_ALLOWED"]


async def test_forward_auth_reads_scheme_and_country_from_trusted_proxies_only(
    geo_api: Api,
) -> None:
    policy = {"network": {"require_https": True, "countries_deny": ["FR"]}}
    key, _ = await geo_api.create_key(policy=policy)
    headers = {**GATEWAY, "Authorization": f"Bearer {key}"}

    async def auth(client: httpx.AsyncClient, proto: str, country: str) -> httpx.Response:
        extra = {"X-Forwarded-Proto": proto, "CF-IPCountry": country}
        return await client.get("/v1/auth", headers={**headers, **extra})

    trusted = geo_api.client
    assert (await auth(trusted, "https", "DE")).status_code == 200
    response = await auth(trusted, "http", "DE")
    assert (response.status_code, response.json()["code"]) == (403, "HTTPS_REQUIRED")
    response = await auth(trusted, "https", "fr")
    assert (response.status_code, response.json()["code"]) == (403, "COUNTRY_NOT_ALLOWED")
    # A peer that is not a trusted proxy: its X-Forwarded-Proto and CF-IPCountry are ignored.
    transport = httpx.ASGITransport(app=geo_api.app, client=("192.0.2.50", 4000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://keyplane.test") as other:
        response = await auth(other, "https", "DE")
    assert (response.status_code, response.json()["code"]) == (403, "HTTPS_REQUIRED")


HOSTILE_NETWORK_RULES: list[tuple[dict[str, object], str]] = [
    ({"countries_allow": ["D"]}, "countries_allow"),
    ({"countries_allow": ["DEU"]}, "countries_allow"),
    ({"countries_deny": ["1A"]}, "countries_deny"),
    ({"countries_deny": [""]}, "countries_deny"),
    ({"countries_deny": ["ÄÖ"]}, "countries_deny"),
    ({"countries_deny": [7]}, "countries_deny"),
    ({"countries_allow": ["DE"] * 301}, "countries_allow"),
    ({"user_agents": ["x" * 257]}, "user_agents"),
    ({"user_agents": ["a\nb"]}, "user_agents"),
    ({"user_agents": ["ok"] * 51}, "user_agents"),
    ({"domains": ["*.com"]}, "domains"),
    ({"domains": ["https://app.example.com"]}, "domains"),
    ({"domains": ["a.*.example.com"]}, "domains"),
    ({"domains": ["x.example.com"] * 101}, "domains"),
    ({"domains": ["a" * 300 + ".com"]}, "domains"),
    ({"require_https": "yes"}, "require_https"),
]


@pytest.fixture
async def sqlite_api(sqlite_database: Database, clock: ManualClock) -> AsyncIterator[Api]:
    """Input checks happen before any storage: one backend is enough for them."""
    app = create_app(sqlite_database.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keyplane.test",
            headers={"Authorization": f"Bearer {ROOT_KEY}"},
        ) as client,
    ):
        yield Api(client, app, clock, sqlite_database)


async def test_hostile_network_rules_and_verify_context_are_a_422(sqlite_api: Api) -> None:
    api = sqlite_api
    for network, field in HOSTILE_NETWORK_RULES:
        body = {"name": "k", "policy": {"network": network}}
        response = await api.client.post("/v1/keys", json=body)
        assert response.status_code == 422, (network, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert field in response.text
    key, _ = await api.create_key()
    for context in ({"country": "DEU"}, {"country": "1"}, {"country": "D "}, {"scheme": "ftp"}):
        response = await api.client.post("/v1/verify", json={"key": key, **context})
        assert response.status_code == 422, (context, response.text)
        assert response.headers["content-type"] == "application/problem+json"
