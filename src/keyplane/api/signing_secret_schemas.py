"""Request and response bodies of ``/v1/signing-secrets``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, Strict, StringConstraints

from keyplane.api.fields import Input, Integral
from keyplane.api.schemas import Ack, LongText, Name
from keyplane.domain.signing_secrets import MAX_OVERLAP, MAX_PAYLOAD_BYTES, SigningSecretRecord

#: A Standard Webhooks message id: printable ASCII without spaces (it becomes a header).
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[!-~]+$")]


class SigningSecretCreate(Input):
    owner: Name = Field(description="whose secret this is: your customer's id or name")
    description: LongText | None = None


class SigningSecretRotate(Input):
    overlap_seconds: Annotated[
        int, Strict(), Field(ge=0, le=int(MAX_OVERLAP.total_seconds())), Integral
    ] = Field(
        default=86_400,
        description="how long the previous secret keeps signing beside the new one "
        "(0 retires it at once; at most 30 days)",
    )


class SigningSecretSign(Input):
    payload: Annotated[str, StringConstraints(max_length=MAX_PAYLOAD_BYTES)] = Field(
        description="the exact body you will send (at most 48 KiB as UTF-8); sign the "
        "bytes you send, not a re-serialised copy"
    )
    msg_id: MessageId | None = Field(
        default=None, description="the message id (webhook-id); a fresh msg_... by default"
    )
    timestamp: (
        Annotated[int, Strict(), Field(ge=1_000_000_000, le=9_999_999_999), Integral] | None
    ) = Field(default=None, description="Unix seconds of this attempt; now by default")


class SigningSecretOut(BaseModel):
    id: str
    owner: str
    description: str | None
    project_id: str | None
    created_at: datetime
    rotated_at: datetime | None
    previous_expires_at: datetime | None = Field(
        description="until when the previous secret still signs (null: no overlap running)"
    )

    @classmethod
    def of(cls, record: SigningSecretRecord, now: datetime) -> SigningSecretOut:
        return cls(
            id=record.id,
            owner=record.owner,
            description=record.description,
            project_id=record.project_id,
            created_at=record.created_at,
            rotated_at=record.rotated_at,
            previous_expires_at=record.previous_expires_at if record.previous_active(now) else None,
        )


class SigningSecretEnvelope(BaseModel):
    data: SigningSecretOut


class SigningSecretCreated(BaseModel):
    secret: str = Field(description="the whsec_ secret; shown only in this response")
    data: SigningSecretOut | Ack


class SigningSecretPage(BaseModel):
    data: list[SigningSecretOut]
    next_cursor: str | None
    has_more: bool


class SignatureOut(BaseModel):
    msg_id: str
    timestamp: int
    headers: dict[str, str] = Field(
        description="webhook-id, webhook-timestamp and webhook-signature, to send as they are"
    )


class SignatureEnvelope(BaseModel):
    data: SignatureOut
