"""Bodies of the leak response routes: the reported tokens, their labels, the project setting.

The report bodies are read raw (the GitHub signature covers the exact bytes, and a validation
message must never echo a token back), so their schema is declared here for the OpenAPI
document and parsed by ``domain/leaks.parse_reports``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from keyplane.api.fields import TEXT_PATTERN, Input
from keyplane.domain.leaks import (
    MAX_FIELD_LENGTH,
    MAX_TOKEN_LENGTH,
    MAX_TOKENS,
    MAX_URL_LENGTH,
    LeakAction,
    TokenLabel,
)

ActionName = Literal["revoke", "disable", "rotate", "notify"]


def _optional(limit: int) -> dict[str, Any]:
    # Not nullable: GitHub sends text or leaves a field out, and null is refused as such.
    return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": TEXT_PATTERN}


REPORT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_TOKENS,
                "items": {
                    "type": "object",
                    "required": ["token"],
                    "properties": {
                        "token": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_TOKEN_LENGTH,
                            "pattern": TEXT_PATTERN,
                        },
                        "type": _optional(MAX_FIELD_LENGTH),
                        "url": _optional(MAX_URL_LENGTH),
                        "source": _optional(MAX_FIELD_LENGTH),
                    },
                },
            }
        }
    },
}


class LabelOut(BaseModel):
    """GitHub's feedback format: the token by its SHA-256 (hex), never the token itself."""

    token_hash: str
    token_type: str
    label: Literal["true_positive", "false_positive"]

    @classmethod
    def of(cls, label: TokenLabel) -> LabelOut:
        return cls(
            token_hash=label.token_hash,
            token_type=label.token_type,
            label="true_positive" if label.label.value == "true_positive" else "false_positive",
        )


class LabelsEnvelope(BaseModel):
    data: list[LabelOut]


class LeakResponseIn(Input):
    action: ActionName = Field(
        description="what happens to a key of this project reported leaked: revoke (default), "
        "disable, rotate (new secret held for its owner, short grace) or notify (event only)"
    )


class LeakResponseOut(BaseModel):
    project_id: str
    action: ActionName

    @classmethod
    def of(cls, project_id: str, action: LeakAction) -> LeakResponseOut:
        return cls(project_id=project_id, action=action.value)


class LeakResponseEnvelope(BaseModel):
    data: LeakResponseOut
