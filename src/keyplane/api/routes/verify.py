"""``/v1/verify``: the data-plane check a gateway makes on every request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response

from keyplane.api.deps import Verifier, VerifierDep
from keyplane.api.exact import ExactJsonRoute, credits
from keyplane.api.schemas import VerifyRequest, VerifyResponse
from keyplane.api.verdict_json import verdict_json
from keyplane.domain import money, request_signing
from keyplane.domain.policy import RequestContext
from keyplane.services import verify as service
from keyplane.services.verify import Verdict

router = APIRouter(prefix="/v1", tags=["verify"], route_class=ExactJsonRoute)


@router.post("/verify", response_model=VerifyResponse)
async def verify(body: VerifyRequest, principal: Verifier, verifier: VerifierDep) -> Response:
    """Decide whether an API key may serve this request now; always 200 with a ``code``.

    Limits and budget are consumed only when the verdict is VALID. A reservation (``cost``,
    ``tokens``) and a concurrency slot are held until the usage report with the same
    ``request_id`` settles them, or until they time out.
    """
    verdict = await verifier.verify(principal, service_request(body))
    # Written directly (api/verdict_json.py): this is the hot path, and the shape is fixed by
    # VerifyResponse; verdict_body below is the reference it is tested against.
    return Response(verdict_json(verdict), media_type="application/json")


def service_request(body: VerifyRequest) -> service.VerifyRequest:
    """What a validated verify body asks the verifier: REST, the lean data plane and gRPC
    (``grpc/keys.py``) all go through here, so every context field reaches the policy."""
    tokens = body.tokens
    return service.VerifyRequest(
        key=body.key,
        scopes=body.scopes,
        context=request_context(body),
        request_id=body.request_id,
        cost=0 if body.cost is None else money.to_micros(body.cost),
        tokens_in=0 if tokens is None else tokens.input,
        tokens_out=0 if tokens is None else tokens.output,
        acquire_concurrency=body.acquire_concurrency,
        wait_ms=body.wait_ms,
    )


#: The longest key the body model takes (its ``key`` field's ``max_length``).
_MAX_KEY = next(
    meta.max_length
    for meta in VerifyRequest.model_fields["key"].metadata
    if getattr(meta, "max_length", None) is not None
)


def plain_request(document: Any) -> service.VerifyRequest | None:
    """What a decoded body of one key and nothing else asks (``{"key": "..."}``, most
    verifies), without the body model's field-by-field validation; ``None`` for any other
    body. It is what ``service_request(VerifyRequest.model_validate(document))`` gives such a
    body (``tests/api/test_verify_request_context.py`` holds the two equal): a string that the
    model could refuse (too long, or not ASCII, where a lone surrogate is refused) is left to
    the model."""
    if type(document) is not dict or len(document) != 1:
        return None
    key = document.get("key")
    if type(key) is not str or len(key) > _MAX_KEY or not key.isascii():
        return None
    return service.VerifyRequest(key)


#: The body's fields that describe the gateway's request (``RequestContext``): every field
#: but these, so that a field added later counts as context (and is never skipped below).
CONTEXT_FIELDS = frozenset(VerifyRequest.model_fields) - {
    "key",
    "scopes",
    "request_id",
    "cost",
    "tokens",
    "acquire_concurrency",
    "wait_ms",
}
#: A body that gives none of them (most verifies): every field at its default.
_NO_CONTEXT = RequestContext()


def request_context(body: VerifyRequest) -> RequestContext:
    """The request context a verify body describes."""
    if CONTEXT_FIELDS.isdisjoint(body.model_fields_set):
        return _NO_CONTEXT
    return built_context(body)


def built_context(body: VerifyRequest) -> RequestContext:
    """The request context read field by field: the reference ``request_context`` skips when
    no context field was given."""
    return RequestContext(
        model=body.model,
        ip=body.ip,
        origin=body.origin,
        referrer=body.referrer,
        user_agent=body.user_agent,
        scheme=body.scheme,
        country=None if body.country is None else body.country.upper(),
        signed=None
        if body.signature is None
        else request_signing.signed_request(**body.signature.model_dump()),
        features=body.all_features(),
        operation=body.operation,
        provider=body.provider,
        auto_routing=body.auto_routing,
        fallback=body.fallback,
    )


def verdict_body(verdict: Verdict) -> dict[str, object]:
    """The verify answer as a dictionary: the reference ``verdict_json`` writes directly."""
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
            "plan": None,
            "request_id": None,
            "limits": [],
            "retry_after": None,
            "directives": {},
            "rotation_pending": False,
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
        "scopes": list(verdict.scopes),
        "expires_at": _utc_text(record.expires_at),
        "plan": verdict.plan,
        "request_id": verdict.request_id,
        "limits": [
            {
                "name": limit.name,
                "kind": limit.kind,
                "limit": credits(limit.limit) if limit.kind == "budget" else limit.limit,
                "remaining": credits(limit.remaining)
                if limit.kind == "budget"
                else limit.remaining,
                "reset_at": _utc_text(limit.reset_at),
                **({} if limit.carry is None else {"carry": credits(limit.carry)}),
            }
            for limit in verdict.limits
        ],
        "retry_after": verdict.retry_after,
        "directives": verdict.directives,
        "rotation_pending": verdict.rotation_pending,
    }


def _utc_text(when: datetime | None) -> str | None:
    # The same form pydantic gives every other timestamp in the API: ISO 8601 with "Z".
    return None if when is None else when.isoformat().replace("+00:00", "Z")
