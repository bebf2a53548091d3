"""Management keys: authenticating the management API's callers, and issuing more keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from keyplane.domain import ids, keyformat, scopes
from keyplane.domain.changes import NOWHERE, SYSTEM, Actor, Journal, Origin
from keyplane.domain.clock import Clock
from keyplane.domain.crypto import digests_equal, key_digest
from keyplane.domain.tenancy import (
    MANAGEMENT_SCOPES,
    ManagementKeyRecord,
    Organization,
    Principal,
)
from keyplane.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from keyplane.services.authz import require_scope
from keyplane.services.cache import TtlCache
from keyplane.services.last_used import LastUsedRecorder
from keyplane.services.security_events import SecurityEvents
from keyplane.store.database import Database

ROOT_KEY_ID = "root"
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True, slots=True)
class IssuedManagementKey:
    secret: str
    record: ManagementKeyRecord


class ManagementKeys:
    def __init__(
        self,
        store: Database,
        cache: TtlCache[ManagementKeyRecord],
        clock: Clock,
        server_secret: bytes,
        org: Organization,
        root_key: str | None,
        last_used: LastUsedRecorder,
        security: SecurityEvents | None = None,
    ) -> None:
        self._store = store
        self._security = security
        self._last_used = last_used
        self._cache = cache
        self._clock = clock
        self._server_secret = server_secret
        self._org = org
        self._root_digest = None if root_key is None else key_digest(server_secret, root_key)

    async def authenticate(self, token: str | None, origin: Origin = NOWHERE) -> Principal:
        """The principal behind a bearer token; AuthenticationError (401) for anything else.

        ``origin`` (where the request came from) rides on the principal into the audit log.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            self._failed("missing" if not token else "malformed", origin)
            raise AuthenticationError("a management key is required (Authorization: Bearer ...)")
        digest = key_digest(self._server_secret, token)
        if self._root_digest is not None and digests_equal(digest, self._root_digest):
            return Principal(
                ROOT_KEY_ID, self._org.id, None, ("*",), is_root=True, name="root", origin=origin
            )
        parsed = keyformat.parse(token)
        if parsed is not None and parsed.kind is keyformat.KeyKind.MANAGEMENT:
            record = await self._cache.get(digest)
            if record is not None and record.revoked_at is None:
                self._last_used.record(record.id, self._clock.now())
                return Principal(
                    record.id,
                    record.org_id,
                    record.project_id,
                    record.scopes,
                    name=record.name,
                    origin=origin,
                )
            self._failed("unknown" if record is None else "revoked", origin, record)
        else:
            self._failed("malformed", origin)
        raise AuthenticationError("invalid management key")

    def _failed(
        self, reason: str, origin: Origin, record: ManagementKeyRecord | None = None
    ) -> None:
        """Count a failed authentication for the audit log (never the token: only why, and
        which key when it is known)."""
        if self._security is None:
            return
        org_id = self._org.id if record is None else record.org_id
        self._security.auth_failed(org_id, reason, origin)

    async def create(
        self,
        principal: Principal,
        name: str,
        wanted_scopes: tuple[str, ...],
        project_id: str | None,
    ) -> IssuedManagementKey:
        require_scope(principal, "management_keys:write")
        _check_management_scopes(wanted_scopes)
        excess = scopes.missing(principal.scopes, wanted_scopes)
        if excess:
            raise PermissionDeniedError(
                f"cannot grant scopes this key does not hold: {', '.join(excess)}",
                code="SCOPE_ESCALATION",
            )
        if principal.project_id is not None:
            if project_id not in (None, principal.project_id):
                raise PermissionDeniedError(
                    "cannot grant a project this key cannot reach", code="SCOPE_ESCALATION"
                )
            project_id = principal.project_id
        if (
            project_id is not None
            and await self._store.tenancy.get_project(principal.org_id, project_id) is None
        ):
            raise NotFoundError(f"no project {project_id!r}", code="PROJECT_NOT_FOUND")
        return await self.issue(
            principal.org_id,
            name,
            wanted_scopes,
            project_id,
            created_by=principal.key_id,
            actor=principal.actor,
        )

    async def issue(
        self,
        org_id: str,
        name: str,
        granted: tuple[str, ...],
        project_id: str | None,
        created_by: str | None,
        actor: Actor = SYSTEM,
    ) -> IssuedManagementKey:
        """Create a management key without permission checks (bootstrap and ``create``);
        ``actor`` is who the audit log names (the system for the bootstrap key)."""
        parsed = keyformat.generate(keyformat.KeyKind.MANAGEMENT)
        digest = key_digest(self._server_secret, parsed.text)
        record = ManagementKeyRecord(
            id=ids.new_id("mk"),
            org_id=org_id,
            project_id=project_id,
            hash=digest,
            start=parsed.start,
            end=parsed.end,
            name=name,
            scopes=granted,
            created_at=self._clock.now(),
            created_by=created_by,
        )
        journal = Journal(actor, record.created_at)
        journal.record(
            "management_key.created",
            org_id=org_id,
            target_type="management_key",
            target_id=record.id,
            project_id=project_id,
            details={"name": name, "scopes": granted, "start": record.start, "end": record.end},
        )
        await self._store.management_keys.create(record, journal)
        await self._cache.invalidate(record.id, (digest,))
        return IssuedManagementKey(parsed.text, record)

    async def list(
        self, principal: Principal, after: str | None, limit: int
    ) -> list[ManagementKeyRecord]:
        require_scope(principal, "management_keys:read")
        return await self._store.management_keys.list_page(
            principal.org_id, after, limit, project_id=principal.project_id
        )

    async def get(self, principal: Principal, key_id: str) -> ManagementKeyRecord:
        require_scope(principal, "management_keys:read")
        return await self._find(principal, key_id)

    async def _find(self, principal: Principal, key_id: str) -> ManagementKeyRecord:
        record = await self._store.management_keys.get(principal.org_id, key_id)
        if record is None or (
            principal.project_id is not None and record.project_id != principal.project_id
        ):
            raise NotFoundError(f"no management key {key_id!r}", code="MANAGEMENT_KEY_NOT_FOUND")
        return record

    async def revoke(self, principal: Principal, key_id: str) -> ManagementKeyRecord:
        require_scope(principal, "management_keys:write")
        target = await self._find(principal, key_id)
        # A key may only revoke keys it could have created: otherwise a narrow key could lock
        # the operator out by revoking every broader one.
        if scopes.missing(principal.scopes, target.scopes):
            raise PermissionDeniedError(
                "cannot revoke a key with scopes this key does not hold", code="SCOPE_ESCALATION"
            )
        now = self._clock.now()
        journal = Journal(principal.actor, now)
        if target.revoked_at is None:  # revoking twice changes nothing: no second entry
            journal.record(
                "management_key.revoked",
                org_id=target.org_id,
                target_type="management_key",
                target_id=target.id,
                project_id=target.project_id,
                details={"name": target.name},
            )
        record = await self._store.management_keys.revoke(principal.org_id, target.id, now, journal)
        await self._cache.invalidate(record.id, (record.hash,))
        return dataclasses.replace(record)


def _check_management_scopes(wanted: tuple[str, ...]) -> None:
    if not wanted:
        raise ValidationError("a management key needs at least one scope", code="INVALID_SCOPE")
    for scope in wanted:
        if not scopes.is_valid_scope(scope) or not any(
            scopes.covers(scope, known) for known in MANAGEMENT_SCOPES
        ):
            raise ValidationError(
                f"unknown management scope {scope!r}; known: {', '.join(MANAGEMENT_SCOPES)}",
                code="INVALID_SCOPE",
            )
