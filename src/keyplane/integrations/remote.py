"""``RemoteVerifier``: ask a Keyplane server (``POST /v1/verify``) through the Python SDK."""

from __future__ import annotations

import logging

from keyplane.client import AsyncClient
from keyplane.client import KeyplaneError as ClientError
from keyplane.client.models import Verdict
from keyplane.domain.request_signing import SignedRequest
from keyplane.integrations.decision import AuthRequest, Decision, Limit

log = logging.getLogger(__name__)

#: The code of a decision made without an answer from Keyplane (see ``http.status_for``).
UNAVAILABLE = "AUTH_UNAVAILABLE"


class RemoteVerifier:
    """Verify against a Keyplane server with an SDK client holding a ``verify`` management key.

    When the server cannot answer (unreachable, timing out, or rejecting the management key)
    the decision is ``AUTH_UNAVAILABLE``, which the middleware and dependency answer with 503:
    they fail closed, never open.

    Args:
        client: the SDK client; its ``timeout`` and ``max_retries`` bound how long a request
            waits for its verdict (keep both small on a hot path).

    Example:
        >>> client = AsyncClient("https://keys.internal", management_key, max_retries=1)
        >>> guard = KeyGuard(RemoteVerifier(client))
    """

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def verify(self, key: str, request: AuthRequest) -> Decision:
        try:
            verdict = await self.client.verify(
                key,
                model=request.model,
                scopes=list(request.scopes) or None,
                ip=request.ip,
                origin=request.origin,
                referrer=request.referrer,
                user_agent=request.user_agent,
                cost=request.cost,
                tokens=(
                    {"input": request.tokens_in, "output": request.tokens_out}
                    if request.tokens_in or request.tokens_out
                    else None
                ),
                request_id=request.request_id,
                scheme=request.scheme,
                country=request.country,
                signature=None if request.signed is None else signed_fields(request.signed),
                features=list(request.features) or None,
                operation=request.operation,
                provider=request.provider,
            )
        except ClientError as exc:
            # The exception's text names the failure, never the key (the SDK sends it in the
            # body only); the type is enough to tell an outage from a bad management key.
            log.warning("Keyplane verify failed: %s", type(exc).__name__)
            return Decision(UNAVAILABLE)
        return decision_of(verdict)


def signed_fields(signed: SignedRequest) -> dict[str, str]:
    """The ``signature`` object of POST /v1/verify for a request's signing parts."""
    fields = {
        "signature": signed.signature,
        "method": signed.method,
        "path": signed.path,
        "query": signed.query,
        "body_sha256": signed.body_sha256,
    }
    if signed.timestamp is not None:
        fields["timestamp"] = signed.timestamp
    if signed.nonce is not None:
        fields["nonce"] = signed.nonce
    return fields


def decision_of(verdict: Verdict) -> Decision:
    """The gateway's view of an SDK verdict."""
    return Decision(
        code=verdict.code,
        key_id=verdict.key_id,
        owner=verdict.owner,
        name=verdict.name,
        plan=verdict.plan,
        environment=verdict.environment,
        request_id=verdict.request_id,
        scopes=tuple(verdict.scopes),
        limits=tuple(
            Limit(
                limit.name, limit.kind, float(limit.limit), float(limit.remaining), limit.reset_at
            )
            for limit in verdict.limits
        ),
        retry_after=verdict.retry_after,
        directives=verdict.directives,
        rotation_pending=verdict.rotation_pending,
    )
