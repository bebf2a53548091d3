"""Sealing a shown-once secret for the short time an idempotent retry may need it again.

A key created under an ``Idempotency-Key`` must be answerable to a retry of the same request
(the client lost the first response), and nothing else. Its plaintext is therefore kept, only
for a short window, sealed with AES-256-GCM under a key derived (HKDF-SHA256, RFC 5869) from
the server secret with its own purpose label: the same server secret that peppers key hashes,
so it works without the vault's master keys, yet a key for this purpose alone. The associated
data binds a sealed token to the idempotency record it was made for, so a token copied into
another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_PURPOSE = b"keyplane idempotent replay secret v1"
_VERSION = "v1."
_NONCE_BYTES = 12


def replay_sealing_key(server_secret: bytes) -> bytes:
    """The AES-256 key for replay secrets, derived from the server secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(
        server_secret
    )


def seal(key: bytes, plaintext: str, associated: bytes) -> str:
    """``plaintext`` encrypted and authenticated, bound to ``associated``; ASCII."""
    # A random 96-bit nonce per token: few tokens are sealed under one key over its life.
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), associated)
    return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(key: bytes, token: str, associated: bytes) -> str | None:
    """The plaintext of a token made by ``seal`` with the same key and associated data.

    ``None`` for anything else (another server secret, another record, a damaged token): the
    caller treats it as a secret it no longer has.
    """
    if not token.startswith(_VERSION):
        return None
    try:
        raw = base64.urlsafe_b64decode(token[len(_VERSION) :].encode("ascii"))
        if len(raw) <= _NONCE_BYTES:
            return None
        plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated)
        return plain.decode("utf-8")
    except (InvalidTag, binascii.Error, ValueError, UnicodeError):
        return None


_SIGNING_SECRET_PURPOSE = b"keyplane owner signing secret v1"


def signing_secret_sealing_key(server_secret: bytes) -> bytes:
    """The AES-256 key that seals owners' webhook signing secrets (``/v1/signing-secrets``).

    Its own HKDF label: a token sealed for idempotent replay never opens as a signing secret,
    nor the reverse. Unlike replay secrets these stay sealed for the secret's whole life, so a
    server secret change makes them unopenable (documented in docs/webhooks.md).
    """
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_SIGNING_SECRET_PURPOSE
    ).derive(server_secret)


_REQUEST_SIGNING_PURPOSE = b"keyplane request signing secret v1"


def request_signing_sealing_key(server_secret: bytes) -> bytes:
    """The AES-256 key that seals API keys' request-signing secrets (docs/signing.md).

    Its own HKDF label, like the others. The associated data of each sealed secret is the hash
    of the API key secret it was issued with, so it opens only beside that key.
    """
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_REQUEST_SIGNING_PURPOSE
    ).derive(server_secret)


_HELD_ROTATION_PURPOSE = b"keyplane held rotation secret v1"


def held_rotation_sealing_key(server_secret: bytes) -> bytes:
    """The AES-256 key that seals automatic rotations' new secrets until claimed.

    Its own HKDF label, like the others: a held secret opens for nothing else. Held secrets
    live a grace period at most, then are erased, so a server secret change loses only the
    pending ones (they are then unclaimable; the operator rotates again).
    """
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_HELD_ROTATION_PURPOSE
    ).derive(server_secret)
