"""Signing secrets Keyplane keeps for the operator's customers (seed 003).

An operator that sends its own webhooks to its customers needs one Standard Webhooks secret
per customer (``owner``). Keyplane generates it, shows it once, keeps it sealed
(``domain/sealing.py``, a key derived from the server secret) and signs payloads with it on
request, so the operator's systems never hold these secrets in plaintext.

Rotation keeps the previous secret signing beside the new one until ``previous_expires_at``:
customers switch over whenever they like in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: Longest overlap a rotation may ask for.
MAX_OVERLAP = timedelta(days=30)
DEFAULT_OVERLAP = timedelta(hours=24)
MAX_OWNER_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 1000
#: Largest payload ``sign`` accepts, in UTF-8 bytes.
MAX_PAYLOAD_BYTES = 48 * 1024


@dataclass(frozen=True, slots=True)
class SigningSecretRecord:
    """One owner's signing secret, sealed; the plaintext is never part of a record."""

    id: str
    org_id: str
    project_id: str | None
    owner: str
    description: str | None
    sealed_secret: str
    created_at: datetime
    previous_sealed_secret: str | None = None
    previous_expires_at: datetime | None = None
    rotated_at: datetime | None = None

    def previous_active(self, now: datetime) -> bool:
        """Whether the previous secret still signs (a rotation overlap is running)."""
        return (
            self.previous_sealed_secret is not None
            and self.previous_expires_at is not None
            and now < self.previous_expires_at
        )

    def visible_to(self, project_id: str | None) -> bool:
        """Whether a caller bound to ``project_id`` (None: the whole org) reaches it."""
        return project_id is None or self.project_id == project_id
