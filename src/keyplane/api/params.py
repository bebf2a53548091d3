"""Query and path parameter checks shared by routers."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import Depends, Query, Request

from keyplane.api.deps import get_settings
from keyplane.api.fields import TEXT_PATTERN
from keyplane.domain import ids, validation
from keyplane.errors import NotFoundError, ValidationError
from keyplane.settings import Settings

_HASH = re.compile(r"[0-9a-f]{64}")
MAX_METADATA_FILTERS = 10
#: For ``Query(json_schema_extra=...)``: the OpenAPI document states what check_query_text
#: enforces (which stays the enforcer, with its own message).
CLEAN_TEXT = {"pattern": TEXT_PATTERN}


def _cursor(
    cursor: Annotated[
        str | None,
        Query(
            max_length=40,
            description="next_cursor of the previous page",
            json_schema_extra=CLEAN_TEXT,
        ),
    ] = None,
) -> str | None:
    # Checked like every other query text: a NUL here once reached PostgreSQL as a 503.
    return check_query_text("cursor", cursor)


CursorParam = Annotated[str | None, Depends(_cursor)]

#: The longest a write may wait for every instance to confirm (``?timeout=``).
MAX_CONFIRM_TIMEOUT = 60.0


def _confirm_wait(
    settings: Annotated[Settings, Depends(get_settings)],
    wait: Annotated[
        Literal["confirmed"] | None,
        Query(description="`confirmed`: answer once every live instance dropped the key"),
    ] = None,
    timeout: Annotated[
        float | None,
        Query(
            gt=0,
            le=MAX_CONFIRM_TIMEOUT,
            description="seconds to wait for confirmations (with wait=confirmed)",
        ),
    ] = None,
) -> float | None:
    """How long to wait for confirmations, or None not to wait."""
    if wait is None:
        if timeout is not None:
            # A rule across two parameters, which the OpenAPI document cannot state.
            raise ValidationError(
                "timeout: only allowed with wait=confirmed",
                errors=[{"loc": "query.timeout", "msg": "only allowed with wait=confirmed"}],
            )
        return None
    return settings.confirm_timeout_seconds if timeout is None else timeout


ConfirmWait = Annotated[float | None, Depends(_confirm_wait)]
LimitParam = Annotated[int, Query(ge=1, le=100)]


def check_key_ref(id_or_hash: str) -> str:
    """A key id or hash; anything else cannot exist, so it is a 404 without a query."""
    if ids.looks_like_id(id_or_hash, "key") or _HASH.fullmatch(id_or_hash):
        return id_or_hash
    raise NotFoundError("no such key", code="KEY_NOT_FOUND")


def check_id(value: str, kind: str, what: str) -> str:
    if ids.looks_like_id(value, kind):
        return value
    raise NotFoundError(f"no such {what}", code=f"{what.upper().replace(' ', '_')}_NOT_FOUND")


def check_query_text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validation.check_text(value)
    except ValueError as exc:
        raise ValidationError(f"{name}: {exc}") from None


def reject_unknown_params(
    request: Request, allowed: set[str], *, metadata_filters: bool = False
) -> None:
    unknown = sorted(
        name
        for name in request.query_params
        if name not in allowed and not (metadata_filters and name.startswith("metadata."))
    )
    if unknown:
        shown = ", ".join(ascii(name) for name in unknown)[:200]  # never echo raw control bytes
        raise ValidationError(f"unknown query parameter(s): {shown}", code="UNKNOWN_PARAMETER")


def metadata_filters(request: Request) -> tuple[tuple[tuple[str, ...], str], ...]:
    """``metadata.billing.tier=enterprise`` query parameters as (path, value) pairs."""
    filters = []
    for name, value in request.query_params.multi_items():
        if not name.startswith("metadata."):
            continue
        try:
            path = validation.parse_metadata_path(name.removeprefix("metadata."))
            validation.check_text(value)
        except ValueError as exc:
            raise ValidationError(str(exc)[:200], code="INVALID_FILTER") from None
        if len(value) > 200:
            raise ValidationError(
                "metadata filter values are at most 200 characters", code="INVALID_FILTER"
            )
        filters.append((path, value))
    if len(filters) > MAX_METADATA_FILTERS:
        raise ValidationError(
            f"at most {MAX_METADATA_FILTERS} metadata filters", code="INVALID_FILTER"
        )
    return tuple(filters)
