"""The data-plane hot path: may this key be used now?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keyplane.domain import keyformat
from keyplane.domain.clock import Clock
from keyplane.domain.crypto import key_digest
from keyplane.domain.decisions import Code, decide
from keyplane.domain.keys import KeyRecord
from keyplane.domain.tenancy import Principal
from keyplane.services.cache import TtlCache
from keyplane.services.last_used import LastUsedRecorder
from keyplane.store.base import SecretMatch


@dataclass(frozen=True, slots=True)
class Verdict:
    code: Code
    record: KeyRecord | None = None

    @property
    def valid(self) -> bool:
        return self.code is Code.VALID


_MALFORMED = Verdict(Code.MALFORMED)
_NOT_FOUND = Verdict(Code.NOT_FOUND)


class Verifier:
    """Parse, hash, look up (cached), decide, and note the use; no synchronous writes."""

    def __init__(
        self,
        cache: TtlCache[SecretMatch],
        clock: Clock,
        server_secret: bytes,
        last_used: LastUsedRecorder,
    ) -> None:
        self._cache = cache
        self._clock = clock
        self._server_secret = server_secret
        self._last_used = last_used

    async def verify(
        self, principal: Principal, presented: str, required_scopes: Sequence[str] = ()
    ) -> Verdict:
        parsed = keyformat.parse(presented)
        if parsed is None:
            return _MALFORMED  # shape or checksum wrong: no storage access at all
        if not parsed.kind.is_api_key:
            return _NOT_FOUND  # management keys never pass verify
        match = await self._cache.get(key_digest(self._server_secret, presented))
        if match is None:
            return _NOT_FOUND
        record = match.record
        # Another org's key, or a project the caller can't reach, is indistinguishable from
        # an unknown one: verify must not become an oracle across tenants.
        if record.org_id != principal.org_id or not principal.reaches_project(record.project_id):
            return _NOT_FOUND
        now = self._clock.now()
        code = decide(record, match.valid_until, required_scopes, now)
        if code is Code.NOT_FOUND:
            return _NOT_FOUND
        if code is Code.VALID:
            self._last_used.record(record.id, now)
        return Verdict(code, record)
