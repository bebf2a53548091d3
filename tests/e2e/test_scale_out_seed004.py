"""Seed 004's limits on two instances (PostgreSQL + Redis), 1,000 concurrent verifies each:
a model's requests per calendar day, three cost windows at once, and one signed request
replayed 1,000 times."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter

import pytest

from keyplane.domain import request_signing
from tests.e2e.conftest import Server
from tests.e2e.test_enforcement import burst_verify
from tests.e2e.test_scale_out import _create_key, pair  # noqa: F401 - the two instances

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

BURST = 1000


def _codes(first: Server, second: Server, body: dict[str, object]) -> Counter[str]:
    targets = [first if n % 2 else second for n in range(BURST)]
    verdicts = asyncio.run(burst_verify(targets, [body] * BURST))
    return Counter(str(verdict["code"]) for verdict in verdicts)


def test_a_models_requests_per_day_are_exact_across_two_instances(
    pair: tuple[Server, Server],  # noqa: F811
) -> None:
    first, second = pair
    policy = {"models": {"cost_limits": {"gpt-4*": {"max_requests_per_day": 100}}}}
    key, _ = _create_key(first, policy)
    assert _codes(first, second, {"key": key, "model": "gpt-4o"}) == {
        "VALID": 100,
        "RATE_LIMITED": BURST - 100,
    }
    # Other models are not counted.
    assert _codes(first, second, {"key": key, "model": "claude-3"}) == {"VALID": BURST}


def test_three_cost_windows_are_exact_across_two_instances(
    pair: tuple[Server, Server],  # noqa: F811
) -> None:
    first, second = pair
    costs = {"per_hour_max": 5, "per_day_max": 8, "per_month_max": 20, "per_request_max": 1}
    key, _ = _create_key(first, {"costs": costs})
    # The hour's 5.00 is the tightest: exactly 50 reservations of 0.10.
    assert _codes(first, second, {"key": key, "cost": 0.1}) == {
        "VALID": 50,
        "COST_LIMITED": BURST - 50,
    }


def test_one_signed_request_replayed_on_two_instances_passes_once(
    pair: tuple[Server, Server],  # noqa: F811
) -> None:
    first, second = pair
    with first.client() as client:
        response = client.post(
            "/v1/keys",
            json={"name": "signed", "policy": {"signing": {"max_timestamp_age": 300}}},
        )
        assert response.status_code == 201, response.text
        key, secret = response.json()["key"], response.json()["signing_secret"]
    now, nonce = str(int(time.time())), "replayed-nonce-0123456789"
    digest = hashlib.sha256(b"").hexdigest()
    signature = {
        "signature": request_signing.sign(secret, "POST", "/v1/chat", "", now, nonce, digest),
        "method": "POST",
        "path": "/v1/chat",
        "query": "",
        "timestamp": now,
        "nonce": nonce,
        "body_sha256": digest,
    }
    assert _codes(first, second, {"key": key, "signature": signature}) == {
        "VALID": 1,
        "NONCE_REUSED": BURST - 1,
    }
