"""Between protobuf messages and the REST schemas the services' callers already use.

Requests are turned into the REST API's pydantic models (``api/schemas.py``), so a gRPC call is
bounded and validated by exactly the rules of its REST twin. Metadata and policy travel as JSON
text, parsed with exact numbers (``api/exact.JsonNumber``) as a REST body is; credits going out
are decimal strings, and JSON going out keeps every credit's exact text.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from keyplane.api.exact import JsonNumber, loads_exact
from keyplane.api.schemas import KeyOut
from keyplane.domain import money
from keyplane.errors import ValidationError
from keyplane.grpc.gen.keyplane.v1 import keys_pb2 as pb
from keyplane.services.keys import KeyView
from keyplane.services.verify import Verdict

#: The most JSON text one metadata or policy field may hold, before it is parsed.
MAX_JSON_CHARS = 64 * 1024


def present(message: Message, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields of ``message`` among ``names`` that were set (``optional`` ones by presence)."""
    return {name: getattr(message, name) for name in names if message.HasField(name)}


def json_object(field: str, text: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, numbers exact; a 422-class error otherwise."""
    if len(text) > MAX_JSON_CHARS:
        raise ValidationError(
            f"{field}: at most {MAX_JSON_CHARS} characters",
            errors=[{"loc": field, "msg": "too long"}],
        )
    try:
        value = loads_exact(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise ValidationError(
            f"{field}: must be a JSON object", errors=[{"loc": field, "msg": "not a JSON object"}]
        )
    return value


def exact_json(value: Any) -> str:
    """``value`` as JSON text, each exact number (``JsonNumber``) written as its own text."""
    nonce = secrets.token_hex(8)
    numbers: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, JsonNumber):
            numbers.append(item.text)
            return f"kp-{nonce}-{len(numbers) - 1}"
        if isinstance(item, dict):
            return {key: mark(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [mark(inner) for inner in item]
        return item

    text = json.dumps(mark(value), separators=(",", ":"), default=str)
    for index, number in enumerate(numbers):
        text = text.replace(f'"kp-{nonce}-{index}"', number, 1)
    return text


def _time(when: datetime | None) -> str | None:
    return None if when is None else _stamp(when)


def _stamp(when: datetime) -> str:
    # The form pydantic gives timestamps in the REST API: ISO 8601 with "Z".
    return when.isoformat().replace("+00:00", "Z")


def _credit_text(micros: int | None) -> str | None:
    return None if micros is None else money.to_text(micros)


def key_message(view: KeyView, now: datetime) -> pb.Key:
    """A key as REST's ``KeyOut`` shows it, as a message; credits from the view's own
    micro-credits (``KeyOut`` holds them as floats outside an exact route)."""
    out = KeyOut.of(view, now)
    optional = {
        "label": out.label,
        "description": out.description,
        "owner": out.owner,
        "disabled_reason": out.disabled_reason,
        "auto_enable_at": _time(out.auto_enable_at),
        "revoked_reason": out.revoked_reason,
        "revoked_at": _time(out.revoked_at),
        "expires_at": _time(out.expires_at),
        "last_used_at": _time(out.last_used_at),
        "plan": out.plan,
        "limit": _credit_text(view.budget_limit),
        "limit_remaining": _credit_text(view.budget_remaining),
    }
    return pb.Key(
        id=out.id,
        hash=out.hash,
        start=out.start,
        end=out.end,
        org_id=out.org_id,
        project_id=out.project_id,
        name=out.name,
        environment=out.environment.value,
        tags=out.tags,
        metadata_json=exact_json(out.metadata),
        scopes=out.scopes,
        status=out.status.value,
        created_at=_stamp(out.created_at),
        updated_at=_stamp(out.updated_at),
        policy_json=exact_json(out.policy),
        effective_policy_json=exact_json(out.effective_policy),
        usage=pb.Usage(
            total=money.to_text(view.usage["total"]),
            daily=money.to_text(view.usage["day"]),
            weekly=money.to_text(view.usage["week"]),
            monthly=money.to_text(view.usage["month"]),
        ),
        **{name: value for name, value in optional.items() if value is not None},
    )


def _amount(kind: str, value: int) -> str:
    # Budgets are micro-credits, shown as credits; the other limits are counts.
    return money.to_text(value) if kind == "budget" else str(value)


def _limits(verdict: Verdict) -> Iterator[pb.Limit]:
    for limit in verdict.limits:
        message = pb.Limit(
            name=limit.name,
            kind=str(limit.kind),
            limit=_amount(limit.kind, limit.limit),
            remaining=_amount(limit.kind, limit.remaining),
        )
        if limit.reset_at is not None:
            message.reset_at = _stamp(limit.reset_at)
        if limit.carry is not None:
            message.carry = money.to_text(limit.carry)
        yield message


#: ``VerifyRequest`` fields passed on as set (``optional`` ones only when present), and the
#: plain ones passed on always: the REST body validates them all alike.
_VERIFY_OPTIONAL = (
    "request_id",
    "model",
    "ip",
    "origin",
    "referrer",
    "user_agent",
    "cost",
    "scheme",
    "country",
    "feature",
    "operation",
    "provider",
)
_VERIFY_PLAIN = ("key", "acquire_concurrency", "auto_routing", "fallback", "wait_ms")
_SIGNATURE_OPTIONAL = ("query", "timestamp", "nonce", "body_sha256")


def verify_fields(request: pb.VerifyRequest) -> dict[str, Any]:
    """A verify request as the fields of REST's verify body, for the same validation."""
    fields = present(request, _VERIFY_OPTIONAL)
    fields.update((name, getattr(request, name)) for name in _VERIFY_PLAIN)
    fields["scopes"] = list(request.scopes)
    fields["features"] = list(request.features)
    if request.tokens_in or request.tokens_out:
        fields["tokens"] = {"input": request.tokens_in, "output": request.tokens_out}
    if request.HasField("signature"):
        signed = request.signature
        fields["signature"] = {
            "signature": signed.signature,
            "method": signed.method,
            "path": signed.path,
            **present(signed, _SIGNATURE_OPTIONAL),
        }
    return fields


def verdict_message(verdict: Verdict) -> pb.VerifyResponse:
    """A verdict as ``POST /v1/verify`` answers it, as a message."""
    response = pb.VerifyResponse(
        valid=verdict.valid,
        code=verdict.code.value,
        metadata_json="{}",
        directives_json=exact_json(verdict.directives),
        rotation_pending=verdict.rotation_pending,
    )
    record = verdict.record
    if record is None:
        return response
    response.key_id = record.id
    response.name = record.name
    response.environment = record.environment.value
    response.tags.extend(record.tags)
    response.metadata_json = exact_json(record.metadata)
    response.scopes.extend(verdict.scopes)
    response.limits.extend(_limits(verdict))
    for name, value in (
        ("owner", record.owner),
        ("expires_at", _time(record.expires_at)),
        ("plan", verdict.plan),
        ("request_id", verdict.request_id),
    ):
        if value is not None:
            setattr(response, name, value)
    if verdict.retry_after is not None:
        response.retry_after = verdict.retry_after
    return response
