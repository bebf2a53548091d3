"""Request and response bodies of ``/v1/keys/{id}/limits/reset`` and ``/v1/keys/{id}/credits``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
)

from keyplane.api import exact
from keyplane.api.exact import CreditsOut, credits
from keyplane.api.fields import TEXT_PATTERN, Input, documented
from keyplane.domain import money, validation
from keyplane.domain.usage import CreditAdjustment
from keyplane.services.key_limits import MAX_REASON_LENGTH, LimitsReset

#: A limit window's name: a rate window's (api.policy.RateLimit) or a token window's.
WindowName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_:.-]{0,63}$")]


def _signed_credits(value: object) -> Decimal:
    """Credits either way (+ grants, - charges), never zero; read by the bounded parser
    from the number's own text, as every credit amount is (``api.policy._credits``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("amount is a number of credits, e.g. 25 or -2.5")
    micros = money.to_micros(exact.exact_text(value))  # type: ignore[arg-type]
    if micros == 0:
        raise ValueError("amount must not be zero")
    return money.to_decimal(micros)


SignedCredits = Annotated[
    Decimal,
    BeforeValidator(_signed_credits),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": -money.MAX_CREDITS,
            "maximum": money.MAX_CREDITS,
            "not": {"const": 0},
        }
    ),
]
AdjustmentReason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_REASON_LENGTH),
    AfterValidator(validation.check_text),
    documented(pattern=TEXT_PATTERN),
]


class LimitsResetIn(Input):
    windows: Annotated[list[WindowName], Field(min_length=1, max_length=50)] | None = Field(
        default=None,
        description="only these rate/token windows (by name); absent or null: all of them",
    )
    concurrency: Annotated[bool, Strict()] = Field(
        default=True, description="also free the key's concurrency slots"
    )


class LimitsResetOut(BaseModel):
    key_id: str
    #: The windows made full again.
    windows: list[str]
    concurrency: bool
    slots_released: int = Field(description="concurrency slots that were held and are free")

    @classmethod
    def of(cls, reset: LimitsReset) -> LimitsResetOut:
        return cls(
            key_id=reset.key.id,
            windows=list(reset.windows),
            concurrency=reset.concurrency,
            slots_released=reset.slots_released,
        )


class LimitsResetEnvelope(BaseModel):
    data: LimitsResetOut


class CreditsIn(Input):
    amount: SignedCredits = Field(
        description="credits added to the key's budget (negative: taken from it); exact"
    )
    reason: AdjustmentReason = Field(description="why (kept in the audit log)")


class CreditAdjustmentOut(BaseModel):
    id: str
    key_id: str
    amount: CreditsOut
    reason: str
    created_at: datetime

    @classmethod
    def of(cls, adjustment: CreditAdjustment) -> CreditAdjustmentOut:
        return cls(
            id=adjustment.id,
            key_id=adjustment.key_id,
            amount=credits(adjustment.amount_micros),
            reason=adjustment.reason,
            created_at=adjustment.created_at,
        )


class CreditAdjustmentEnvelope(BaseModel):
    data: CreditAdjustmentOut
