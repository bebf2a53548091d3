"""Two runtimes (two instances) on one PostgreSQL schema and one Redis: the same signed
request replayed 1,000 times concurrently against both is accepted exactly once."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

import pytest

from keyplane.domain import request_signing
from keyplane.domain.clock import ManualClock
from keyplane.domain.policy import RequestContext
from keyplane.domain.tenancy import Principal
from keyplane.services.keys import NewKey
from keyplane.services.runtime import Runtime
from keyplane.services.verify import VerifyRequest
from tests.conftest import REDIS_URL, Database, require_redis

pytestmark = pytest.mark.postgres


async def test_a_replayed_signed_request_passes_once_across_two_instances(
    postgres_database: Database, clock: ManualClock
) -> None:
    require_redis()
    settings = postgres_database.settings(redis_url=REDIS_URL)
    first = await Runtime.start(settings, clock)
    second = await Runtime.start(settings, clock)
    try:
        principal = Principal("mk_test", first.default_project.org_id, None, ("*",))
        issued = await first.services.keys.create(
            principal, NewKey(name="signed", policy={"signing": {"required": True}})
        )
        assert issued.signing_secret is not None
        now = str(int(clock.now().timestamp()))
        body = hashlib.sha256(b"{}").hexdigest()
        signature = request_signing.sign(
            issued.signing_secret, "POST", "/v1/chat", "", now, "replayed-nonce-0001", body
        )
        signed = request_signing.signed_request(
            signature, "POST", "/v1/chat", "", now, "replayed-nonce-0001", body
        )
        request = VerifyRequest(key=issued.secret, context=RequestContext(signed=signed))
        verdicts = await asyncio.gather(
            *(
                (first, second)[i % 2].services.verifier.verify(principal, request)
                for i in range(1000)
            )
        )
        codes = Counter(verdict.code.value for verdict in verdicts)
        assert codes == {"VALID": 1, "NONCE_REUSED": 999}
    finally:
        await first.stop()
        await second.stop()
