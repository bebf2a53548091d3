"""Building blocks shared by the request bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from keyplane.domain import scopes, validation


def _scope(value: str) -> str:
    if not scopes.is_valid_scope(value):
        raise ValueError("scopes are lower-case segments separated by ':' ('*' for any)")
    return value


Scope = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_scope)]
Scopes = Annotated[list[Scope], Field(max_length=validation.MAX_SCOPES)]


class Input(BaseModel):
    # Unknown fields are refused so that typos do not pass silently.
    model_config = ConfigDict(extra="forbid")
