"""``KeyGuard``: check the API key of a request a Python service receives directly.

Used by the ASGI middleware and the FastAPI dependency. Unlike ``/v1/auth`` it never reads the
``X-Keyplane-*`` describing headers: here they would come from the client, who must not pick
the scopes or the model it is checked for. Those come from code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from keyplane.domain.forwarding import parse_trusted
from keyplane.integrations import http
from keyplane.integrations.decision import AuthRequest, Decision, KeyVerifier


def _utc_now() -> datetime:
    return datetime.now(UTC)


class KeyGuard:
    """Reads the key and client context from a request and asks a verifier about it.

    Args:
        verifier: in-process or remote (see :mod:`keyplane.integrations.verifiers`).
        key_header: where the key is: ``Authorization`` (``Bearer <key>``) or another header
            holding the bare key.
        trusted_proxies: addresses or CIDR networks whose ``X-Forwarded-For`` is believed.
        now: the clock used for ``RateLimit-Reset``; UTC wall time by default.

    Raises:
        ValueError: a trusted proxy entry is not an address or network.
    """

    def __init__(
        self,
        verifier: KeyVerifier,
        *,
        key_header: str = "Authorization",
        trusted_proxies: Sequence[str] = (),
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.verifier = verifier
        self.key_header = key_header
        self._trusted = parse_trusted(trusted_proxies)
        self.now = now

    async def check(
        self,
        headers: Mapping[str, str],
        peer: str | None,
        *,
        scopes: Sequence[str] = (),
        model: str | None = None,
    ) -> Decision:
        """The decision for a request with these (lower-case keyed) headers from ``peer``."""
        key = http.read_key(headers, self.key_header)
        if key is None:
            return http.MISSING_KEY
        if len(key) > http.MAX_KEY_LENGTH:
            return Decision("MALFORMED")
        context = http.read_client(headers, peer, self._trusted)
        wanted = context if not scopes and model is None else _with(context, scopes, model)
        return await self.verifier.verify(key, wanted)


def _with(context: AuthRequest, scopes: Sequence[str], model: str | None) -> AuthRequest:
    return dataclasses.replace(context, model=model, scopes=tuple(scopes))
