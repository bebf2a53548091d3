"""Verifiers: in-process (a Keyplane Runtime in this process, no network hop).

The remote one, asking a Keyplane server through the SDK, is in
:mod:`keyplane.integrations.remote`; both satisfy ``KeyVerifier``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keyplane.domain import money
from keyplane.domain.policy import RequestContext
from keyplane.errors import StorageError
from keyplane.integrations.decision import AuthRequest, Decision, Limit
from keyplane.services import verify as service
from keyplane.services.authz import require_scope

if TYPE_CHECKING:
    from keyplane.domain.tenancy import Principal
    from keyplane.services.runtime import Runtime


class InProcessVerifier:
    """Verify against a Runtime in this process, as ``principal`` (needs the ``verify`` scope).

    Example:
        >>> verifier = await InProcessVerifier.authenticated(runtime, management_key)
        >>> decision = await verifier.verify(api_key, AuthRequest(model="gpt-4o"))
    """

    def __init__(self, runtime: Runtime | service.Verifier, principal: Principal) -> None:
        # Refused here already, at construction; the verifier checks again on each call.
        require_scope(principal, "verify")
        if isinstance(runtime, service.Verifier):
            self._verifier = runtime
        else:
            self._verifier = runtime.services.verifier
        self._principal = principal

    @classmethod
    async def authenticated(cls, runtime: Runtime, management_key: str) -> InProcessVerifier:
        """A verifier acting as the holder of ``management_key``.

        Raises:
            AuthenticationError: the management key is not valid.
            PermissionDeniedError: it lacks the ``verify`` scope.
        """
        return cls(runtime, await runtime.services.management.authenticate(management_key))

    async def verify(self, key: str, request: AuthRequest) -> Decision:
        try:
            verdict = await self._verify(key, request)
        except StorageError:
            # Only a key unknown to the cache needs the database; without it, fail closed.
            return Decision("AUTH_UNAVAILABLE")
        return decision_of(verdict)

    async def _verify(self, key: str, request: AuthRequest) -> service.Verdict:
        return await self._verifier.verify(
            self._principal,
            service.VerifyRequest(
                key=key,
                scopes=request.scopes,
                context=RequestContext(
                    model=request.model,
                    ip=request.ip,
                    origin=request.origin,
                    referrer=request.referrer,
                    user_agent=request.user_agent,
                    scheme=request.scheme,
                    country=request.country,
                    signed=request.signed,
                    features=request.features,
                    operation=request.operation,
                    provider=request.provider,
                    auto_routing=request.auto_routing,
                    fallback=request.fallback,
                ),
                request_id=request.request_id,
                cost=0 if request.cost is None else money.to_micros(request.cost),
                tokens_in=request.tokens_in,
                tokens_out=request.tokens_out,
            ),
        )


def decision_of(verdict: service.Verdict) -> Decision:
    """The gateway's view of a service verdict (budget amounts turned into credits)."""
    record = verdict.record
    if record is None:
        return Decision(verdict.code.value)
    return Decision(
        code=verdict.code.value,
        key_id=record.id,
        owner=record.owner,
        name=record.name,
        plan=verdict.plan,
        environment=record.environment.value,
        request_id=verdict.request_id,
        scopes=verdict.scopes,
        limits=tuple(
            Limit(
                limit.name,
                limit.kind,
                money.to_credits(limit.limit) if limit.kind == "budget" else limit.limit,
                money.to_credits(limit.remaining) if limit.kind == "budget" else limit.remaining,
                limit.reset_at,
            )
            for limit in verdict.limits
        ),
        retry_after=verdict.retry_after,
        directives=verdict.directives,
        rotation_pending=verdict.rotation_pending,
    )
