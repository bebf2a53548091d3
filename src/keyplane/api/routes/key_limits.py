"""``/v1/keys/{id}/limits/reset`` and ``/v1/keys/{id}/credits``: operators' hands on a key's
live limits (see ``services/key_limits.py``)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Body, Header, Response

from keyplane.api.deps import CreditsWriter, KeyLimitsDep, KeysWriter
from keyplane.api.exact import ExactJsonRoute
from keyplane.api.key_limits_schemas import (
    CreditAdjustmentEnvelope,
    CreditAdjustmentOut,
    CreditsIn,
    LimitsResetEnvelope,
    LimitsResetIn,
    LimitsResetOut,
)
from keyplane.api.params import check_key_ref
from keyplane.api.schemas import RequestId
from keyplane.domain import money
from keyplane.services.keys import Idempotency

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=ExactJsonRoute)


@router.post("/{id_or_hash}/limits/reset", response_model=LimitsResetEnvelope)
async def reset_key_limits(
    id_or_hash: str,
    principal: KeysWriter,
    limits: KeyLimitsDep,
    body: Annotated[LimitsResetIn | None, Body()] = None,
) -> LimitsResetEnvelope:
    """Make a key's rate and token windows full again and free its concurrency slots."""
    request = body or LimitsResetIn()
    reset = await limits.reset(
        principal,
        check_key_ref(id_or_hash),
        None if request.windows is None else tuple(request.windows),
        request.concurrency,
    )
    return LimitsResetEnvelope(data=LimitsResetOut.of(reset))


@router.post(
    "/{id_or_hash}/credits",
    status_code=201,
    response_model=CreditAdjustmentEnvelope,
    responses={
        200: {
            "model": CreditAdjustmentEnvelope,
            "description": "an idempotent retry: the adjustment the first request made "
            "(header Idempotent-Replayed: true)",
        }
    },
)
async def adjust_key_credits(
    id_or_hash: str,
    body: CreditsIn,
    principal: CreditsWriter,
    limits: KeyLimitsDep,
    response: Response,
    idempotency_key: Annotated[RequestId | None, Header()] = None,
) -> CreditAdjustmentEnvelope:
    """Add credits to (or, negative, take them from) a key's budget, as a ledger entry."""
    idempotency = None
    if idempotency_key is not None:
        canonical = json.dumps(
            {"key": id_or_hash, **body.model_dump(mode="json")},
            sort_keys=True,
            separators=(",", ":"),
        )
        idempotency = Idempotency(idempotency_key, hashlib.sha256(canonical.encode()).hexdigest())
    adjusted = await limits.adjust_credits(
        principal,
        check_key_ref(id_or_hash),
        money.to_micros(body.amount),
        body.reason,
        idempotency,
    )
    if adjusted.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return CreditAdjustmentEnvelope(data=CreditAdjustmentOut.of(adjusted.adjustment))
