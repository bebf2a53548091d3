"""``/v1/verify``: the data-plane check a gateway makes on every request."""

from __future__ import annotations

import json
from datetime import datetime

from fastapi import APIRouter, Response

from keyplane.api.deps import PrincipalDep, RuntimeDep
from keyplane.api.schemas import VerifyRequest, VerifyResponse
from keyplane.services.authz import require_scope
from keyplane.services.verify import Verdict

router = APIRouter(prefix="/v1", tags=["verify"])


@router.post("/verify", response_model=VerifyResponse)
async def verify(body: VerifyRequest, principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    """Decide whether an API key may be used now; always 200 with a verdict ``code``."""
    require_scope(principal, "verify")
    verdict = await runtime.verifier.verify(principal, body.key, body.scopes)
    # Serialised by hand: this is the hot path, and the shape is fixed by VerifyResponse.
    return Response(json.dumps(verdict_body(verdict)), media_type="application/json")


def verdict_body(verdict: Verdict) -> dict[str, object]:
    record = verdict.record
    if record is None:
        return {
            "valid": False,
            "code": verdict.code.value,
            "key_id": None,
            "owner": None,
            "name": None,
            "environment": None,
            "tags": [],
            "metadata": {},
            "scopes": [],
            "expires_at": None,
        }
    return {
        "valid": verdict.valid,
        "code": verdict.code.value,
        "key_id": record.id,
        "owner": record.owner,
        "name": record.name,
        "environment": record.environment.value,
        "tags": list(record.tags),
        "metadata": record.metadata,
        "scopes": list(record.scopes),
        "expires_at": _utc_text(record.expires_at),
    }


def _utc_text(when: datetime | None) -> str | None:
    # The same form pydantic gives every other timestamp in the API: ISO 8601 with "Z".
    return None if when is None else when.isoformat().replace("+00:00", "Z")
