"""Owners' webhook signing secrets: create (shown once), list, rotate with overlap, delete, sign.

The plaintext exists in three places only: the create or rotate answer, this process's memory
while it signs, and the customer's verifier. At rest it is sealed (AES-256-GCM under a key
derived from the server secret, bound to the record's id), so a database dump holds nothing
that signs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

from keyplane import webhooks
from keyplane.domain import ids
from keyplane.domain.changes import Journal
from keyplane.domain.clock import Clock
from keyplane.domain.sealing import seal, signing_secret_sealing_key, unseal
from keyplane.domain.signing_secrets import (
    MAX_DESCRIPTION_LENGTH,
    MAX_OVERLAP,
    MAX_OWNER_LENGTH,
    MAX_PAYLOAD_BYTES,
    SigningSecretRecord,
)
from keyplane.domain.tenancy import Principal
from keyplane.errors import NotFoundError, ValidationError, VaultIntegrityError
from keyplane.services.authz import require_scope
from keyplane.store.base import SigningSecretStore

READ = "signing_secrets:read"
WRITE = "signing_secrets:write"
MAX_PAGE = 200
#: Timestamps ``sign`` accepts: Unix seconds from 2001 to 2286 (ten digits).
_MIN_TIMESTAMP = 1_000_000_000
_MAX_TIMESTAMP = 9_999_999_999


@dataclass(frozen=True, slots=True)
class IssuedSigningSecret:
    """A record and its plaintext secret, which is shown this once."""

    record: SigningSecretRecord
    secret: str


@dataclass(frozen=True, slots=True)
class Signature:
    """Standard Webhooks headers for one payload, and what they were made from."""

    msg_id: str
    timestamp: int
    headers: dict[str, str]


class SigningSecrets:
    def __init__(self, store: SigningSecretStore, clock: Clock, server_secret: bytes) -> None:
        self._store = store
        self._clock = clock
        self._sealing_key = signing_secret_sealing_key(server_secret)

    async def create(
        self, principal: Principal, owner: str, description: str | None = None
    ) -> IssuedSigningSecret:
        """A new secret for ``owner``, in the caller's project when it is bound to one."""
        require_scope(principal, WRITE)
        _check_owner(owner)
        if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
            raise ValidationError(f"a description is at most {MAX_DESCRIPTION_LENGTH} characters")
        now = self._clock.now()
        secret_id = ids.new_id("sigsec")
        secret = webhooks.new_secret()
        record = SigningSecretRecord(
            id=secret_id,
            org_id=principal.org_id,
            project_id=principal.project_id,
            owner=owner,
            description=description,
            sealed_secret=seal(self._sealing_key, secret, _bound_to(secret_id)),
            created_at=now,
        )
        journal = Journal(principal.actor, now)
        _record(journal, "signing_secret.created", record, {"owner": owner})
        await self._store.create(record, journal)
        return IssuedSigningSecret(record, secret)

    async def get(self, principal: Principal, secret_id: str) -> SigningSecretRecord:
        require_scope(principal, READ)
        return await self._find(principal, secret_id)

    async def list(
        self,
        principal: Principal,
        *,
        owner: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[SigningSecretRecord]:
        """The caller's records in creation order, ``owner``'s only when given."""
        require_scope(principal, READ)
        if owner is not None:
            _check_owner(owner)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit is 1-{MAX_PAGE}")
        return await self._store.list_page(
            principal.org_id,
            project_id=principal.project_id,
            owner=owner,
            after=after,
            limit=limit,
        )

    async def rotate(
        self, principal: Principal, secret_id: str, overlap: timedelta
    ) -> IssuedSigningSecret:
        """A new secret; the current one keeps signing beside it for ``overlap``.

        A rotation during an overlap drops the oldest secret: two at most ever sign.
        """
        require_scope(principal, WRITE)
        if not timedelta(0) <= overlap <= MAX_OVERLAP:
            raise ValidationError(f"the overlap is 0 to {MAX_OVERLAP.days} days")
        current = await self._find(principal, secret_id)
        now = self._clock.now()
        secret = webhooks.new_secret()
        rotated = dataclasses.replace(
            current,
            sealed_secret=seal(self._sealing_key, secret, _bound_to(current.id)),
            previous_sealed_secret=current.sealed_secret if overlap > timedelta(0) else None,
            previous_expires_at=now + overlap if overlap > timedelta(0) else None,
            rotated_at=now,
        )
        journal = Journal(principal.actor, now)
        details: dict[str, object] = {
            "owner": current.owner,
            "previous_expires_at": rotated.previous_expires_at,
        }
        _record(journal, "signing_secret.rotated", rotated, details)
        await self._store.rotate(current, rotated, journal)
        return IssuedSigningSecret(rotated, secret)

    async def delete(self, principal: Principal, secret_id: str) -> SigningSecretRecord:
        require_scope(principal, WRITE)
        current = await self._find(principal, secret_id)
        journal = Journal(principal.actor, self._clock.now())
        _record(journal, "signing_secret.deleted", current, {"owner": current.owner})
        await self._store.delete(principal.org_id, current.id, journal)
        return current

    async def sign(
        self,
        principal: Principal,
        secret_id: str,
        payload: str,
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
    ) -> Signature:
        """Standard Webhooks headers for ``payload``, signed with the current secret (and the
        previous one during a rotation overlap).

        Signing needs ``signing_secrets:write``: it produces what the owner will trust.
        """
        require_scope(principal, WRITE)
        body = payload.encode("utf-8")
        if len(body) > MAX_PAYLOAD_BYTES:
            raise ValidationError(f"a payload is at most {MAX_PAYLOAD_BYTES} bytes (UTF-8)")
        if timestamp is not None and not _MIN_TIMESTAMP <= timestamp <= _MAX_TIMESTAMP:
            raise ValidationError("timestamp is Unix seconds (ten digits)")
        record = await self._find(principal, secret_id)
        now = self._clock.now()
        secrets = [self._open(record.sealed_secret, record.id)]
        if record.previous_active(now) and record.previous_sealed_secret is not None:
            secrets.append(self._open(record.previous_sealed_secret, record.id))
        message_id = msg_id if msg_id is not None else ids.new_id("msg")
        seconds = timestamp if timestamp is not None else int(now.timestamp())
        headers = webhooks.signature_headers(secrets, message_id, seconds, body)
        return Signature(message_id, seconds, headers)

    async def _find(self, principal: Principal, secret_id: str) -> SigningSecretRecord:
        record = None
        if ids.looks_like_id(secret_id, "sigsec"):
            record = await self._store.get(principal.org_id, secret_id)
        if record is None or not record.visible_to(principal.project_id):
            raise NotFoundError(f"no signing secret {secret_id!r}", code="SIGNING_SECRET_NOT_FOUND")
        return record

    def _open(self, sealed: str, secret_id: str) -> str:
        secret = unseal(self._sealing_key, sealed, _bound_to(secret_id))
        if secret is None:
            # Another server secret, or a token moved between rows: never sign with garbage.
            raise VaultIntegrityError(
                "this signing secret cannot be opened with the server's secret"
            )
        return secret


def _check_owner(owner: str) -> None:
    if not owner or len(owner) > MAX_OWNER_LENGTH or not owner.isprintable():
        raise ValidationError(f"an owner is 1-{MAX_OWNER_LENGTH} printable characters")


def _bound_to(secret_id: str) -> bytes:
    """The associated data of a sealed signing secret: the record it belongs to."""
    return f"signing_secret:{secret_id}".encode()


def _record(
    journal: Journal, action: str, record: SigningSecretRecord, details: dict[str, object]
) -> None:
    journal.record(
        action,
        org_id=record.org_id,
        target_type="signing_secret",
        target_id=record.id,
        project_id=record.project_id,
        details=details,
    )
