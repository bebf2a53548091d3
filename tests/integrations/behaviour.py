"""What the dependency and the middleware must do, whichever verifier is behind them.

Each check takes a :class:`Keys` (how to make and revoke keys on the Keyplane the verifier
asks) and a client of the protected service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx


@dataclass
class Keys:
    create: Callable[..., Awaitable[tuple[str, str]]]
    revoke: Callable[[str], Awaitable[None]]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert response.json()["status"] == status


async def dependency_allows_and_refuses(keys: Keys, service: httpx.AsyncClient) -> None:
    key, key_id = await keys.create(owner="cust_7", scopes=["read"])
    assert (await service.get("/open")).status_code == 200
    allowed = await service.get("/any", headers=bearer(key))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == {"key_id": key_id, "owner": "cust_7", "scopes": ["read"]}

    missing = await service.get("/any")
    assert_problem(missing, 401, "MISSING_KEY")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(await service.get("/any", headers=bearer("kp_live_nope")), 401, "MALFORMED")

    # The route's scope, not one the client names, is what counts.
    refused = await service.get("/admin", headers={**bearer(key), "X-Keyplane-Scopes": ""})
    assert_problem(refused, 403, "INSUFFICIENT_SCOPE")
    assert key not in refused.text

    gpt_only, _ = await keys.create(policy={"models": {"allow": ["claude-*"]}})
    assert_problem(await service.get("/gpt", headers=bearer(gpt_only)), 403, "FORBIDDEN_MODEL")
    assert (await service.get("/gpt", headers=bearer(key))).status_code == 200

    limited, _ = await keys.create(
        policy={"rate_limits": [{"name": "per_minute", "limit": 1, "period": 60}]}
    )
    last = await service.get("/any", headers=bearer(limited))
    assert last.status_code == 200
    assert last.headers["RateLimit-Limit"] == "1"
    assert last.headers["RateLimit-Remaining"] == "0"
    throttled = await service.get("/any", headers=bearer(limited))
    assert_problem(throttled, 429, "RATE_LIMITED")
    assert int(throttled.headers["Retry-After"]) == 60
    assert throttled.headers["RateLimit-Remaining"] == "0"

    await keys.revoke(key_id)
    assert_problem(await service.get("/any", headers=bearer(key)), 401, "REVOKED")


async def middleware_allows_and_refuses(keys: Keys, service: httpx.AsyncClient) -> None:
    reader, reader_id = await keys.create(scopes=["read"])
    writer, _ = await keys.create(scopes=["write"])
    assert (await service.get("/healthz")).status_code == 200
    allowed = await service.get("/whoami", headers=bearer(reader))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == {"key_id": reader_id, "plan": None}
    assert "RateLimit-Limit" not in allowed.headers  # no limits, no headers
    limited, _ = await keys.create(
        scopes=["read"], policy={"rate_limits": [{"name": "m", "limit": 5, "period": 60}]}
    )
    paced = await service.get("/whoami", headers=bearer(limited))
    assert paced.status_code == 200
    assert (paced.headers["RateLimit-Limit"], paced.headers["RateLimit-Remaining"]) == ("5", "4")
    assert_problem(await service.get("/whoami"), 401, "MISSING_KEY")
    assert_problem(await service.get("/whoami", headers=bearer(writer)), 403, "INSUFFICIENT_SCOPE")
    await keys.revoke(reader_id)
    assert_problem(await service.get("/whoami", headers=bearer(reader)), 401, "REVOKED")
