"""A verify verdict as a gateway sees it, and the small protocol every verifier implements.

The same :class:`Decision` comes out of an in-process Keyplane and a remote one, so the
forward-auth endpoint, the ASGI middleware and the FastAPI dependency share one mapping to
HTTP (see :mod:`keyplane.integrations.http`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from keyplane.domain.request_signing import SignedRequest


@dataclass(frozen=True, slots=True)
class Limit:
    """One of the key's limits after this request (budget amounts in credits)."""

    name: str
    kind: str  # "rate", "tokens", "concurrency" or "budget"
    limit: float
    remaining: float
    reset_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What is known about the request the key is presented with; all optional."""

    model: str | None = None
    scopes: tuple[str, ...] = ()
    ip: str | None = None
    origin: str | None = None
    referrer: str | None = None
    user_agent: str | None = None
    #: Credits to reserve against the key's budget until the usage report settles them.
    cost: Decimal | None = None
    #: Estimated tokens to reserve against the key's token windows.
    tokens_in: int = 0
    tokens_out: int = 0
    request_id: str | None = None
    #: "http" or "https": how the client reached the gateway (``network.require_https``).
    scheme: str | None = None
    #: ISO 3166-1 alpha-2 code from a trusted header (else the server's GeoIP database).
    country: str | None = None
    #: The request's signing parts (``None``: unsigned, or malformed ones).
    signed: SignedRequest | None = None
    #: Features the request uses, its operation and provider (see ``RequestContext``).
    features: tuple[str, ...] = ()
    operation: str | None = None
    provider: str | None = None
    auto_routing: bool = False
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict: ``code`` is one of the stable verify codes (``VALID``, ``REVOKED``, ...)."""

    code: str
    key_id: str | None = None
    owner: str | None = None
    name: str | None = None
    plan: str | None = None
    environment: str | None = None
    request_id: str | None = None
    scopes: tuple[str, ...] = ()
    limits: tuple[Limit, ...] = ()
    #: Seconds until a refused request could pass, when known.
    retry_after: float | None = None
    #: What the gateway must do itself (``data_access``, ``routing``, ``advanced_features``).
    directives: Mapping[str, Any] = field(default_factory=dict)
    #: The key was rotated out and works in its grace period only (X-Keyplane-Rotation-Pending).
    rotation_pending: bool = False

    @property
    def valid(self) -> bool:
        return self.code == "VALID"


class KeyVerifier(Protocol):
    """Anything that can answer "may this API key be used for this request, now?"."""

    async def verify(self, key: str, request: AuthRequest) -> Decision:
        """Verify ``key`` for ``request``; refusals are decisions, not exceptions.

        Raises:
            KeyplaneError: only when the verifier itself cannot answer (unreachable server,
                rejected management key).
        """
        ...
