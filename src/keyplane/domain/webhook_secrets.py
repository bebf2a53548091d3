"""Endpoint signing secrets at rest (``keyplane.webhooks.new_secret`` draws them).

At rest it is sealed (AES-256-GCM, ``domain/sealing.py``) under a key derived with HKDF from the
server secret with its own purpose label, bound to its endpoint id: a sealed value copied into
another row does not open, and the database alone gives no secret away.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyplane.domain.sealing import seal, unseal

_PURPOSE = b"keyplane webhook signing secret v1"


def sealing_key(server_secret: bytes) -> bytes:
    """The AES-256 key endpoint secrets are sealed with, derived from the server secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(
        server_secret
    )


def seal_secret(key: bytes, endpoint_id: str, secret: str) -> str:
    return seal(key, secret, endpoint_id.encode("ascii"))


def open_secret(key: bytes, endpoint_id: str, sealed: str) -> str | None:
    """The secret, or None when it cannot be opened (another server secret, another row)."""
    return unseal(key, sealed, endpoint_id.encode("ascii"))
