"""Envelope encryption of upstream credentials (AES-256-GCM).

Each secret gets its own random 256-bit data key. The secret is encrypted with that data key,
and the data key is encrypted ("wrapped") with the operator's master key. Both encryptions are
AES-256-GCM with a fresh random 96-bit nonce, and both authenticate associated data that binds
the result to its database row (:func:`credential_aad`), so a ciphertext copied into another row
does not decrypt there. The wrap additionally authenticates the master key id, so a token whose
key id was relabelled does not decrypt either.

Why envelopes rather than encrypting each secret with the master key directly: rotating the
master key then re-encrypts 48 bytes of data key per row (:func:`rewrap`) and never touches,
or even produces, the plaintext secret.

A sealed secret is one compact ASCII token, stored as is::

    kpv1.<master key id>.<b64url(nonce | wrapped data key | tag)>.<b64url(nonce | ciphertext | tag)>

Random 96-bit nonces are safe here: every data key encrypts exactly one message, and a master
key wraps one data key per sealed secret, far below the ~2**32 messages NIST SP 800-38D allows
per key with random nonces.

Interface agreed with the leasing side (``keyplane.services.vault``): :class:`MasterKey`,
:class:`Keyring`, :func:`seal`, :func:`unseal`, :func:`rewrap`, :func:`token_key_id`,
:func:`credential_aad`. Both errors derive from :class:`keyplane.errors.VaultError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyplane.errors import ConfigurationError, VaultIntegrityError, VaultKeyError

__all__ = [
    "KEY_BYTES",
    "TOKEN_PREFIX",
    "Keyring",
    "MasterKey",
    "credential_aad",
    "rewrap",
    "seal",
    "token_key_id",
    "unseal",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
TOKEN_PREFIX = "kpv1"  # noqa: S105 - a format tag, not a password
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# Domain separation: the two layers and the key id derivation never share an input format.
_KEY_ID_LABEL = b"keyplane vault key id"
_WRAP_LABEL = b"keyplane vault wrap v1\x00"
_SECRET_LABEL = b"keyplane vault secret v1\x00"
# nonce + 32-byte data key + tag: the only valid size of the wrapped part.
_WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES


class MasterKey:
    """A 256-bit vault master key.

    Args:
        material: exactly 32 bytes, from a CSPRNG.

    Raises:
        ConfigurationError: the material is not 32 bytes.
    """

    __slots__ = ("_aead", "_material", "key_id")

    def __init__(self, material: bytes) -> None:
        if not isinstance(material, bytes) or len(material) != KEY_BYTES:
            size = len(material) if isinstance(material, bytes) else type(material).__name__
            raise ConfigurationError(
                f"a vault master key must be exactly {KEY_BYTES} bytes, got {size}"
            )
        self._material = material
        self._aead = AESGCM(material)
        # One-way: the id can be logged and stored next to the data without revealing the key.
        self.key_id: str = hmac.new(material, _KEY_ID_LABEL, hashlib.sha256).digest()[:8].hex()

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_base64(cls, text: str, *, name: str = "vault key") -> MasterKey:
        """Parse standard or URL-safe base64 of exactly 32 bytes (surrounding whitespace ignored).

        Raises:
            ConfigurationError: not base64, or not 32 bytes once decoded. The message never
                contains the text itself.
        """
        cleaned = text.strip()
        try:
            material = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"{name} is not valid base64; generate one with `keyplane vault generate-key`"
            ) from None
        if len(material) != KEY_BYTES:
            raise ConfigurationError(
                f"{name} must decode to exactly {KEY_BYTES} bytes, got {len(material)}; "
                "generate one with `keyplane vault generate-key`"
            )
        return cls(material)

    def to_base64(self) -> str:
        """Standard base64 of the material: what ``KEYPLANE_VAULT_KEY`` holds."""
        return base64.b64encode(self._material).decode("ascii")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        # Never the material: a repr ends up in logs and tracebacks.
        return f"MasterKey(key_id={self.key_id!r})"


class Keyring:
    """The master key that seals new secrets, and older ones still accepted for reading.

    Args:
        current: seals and rewraps.
        previous: only unseal (and are the source of a rewrap) during a rotation window.
    """

    __slots__ = ("_by_id", "current", "previous")

    def __init__(self, current: MasterKey, previous: Sequence[MasterKey] = ()) -> None:
        self.current = current
        self.previous: tuple[MasterKey, ...] = tuple(
            key for key in dict.fromkeys(previous) if key.key_id != current.key_id
        )
        self._by_id = {key.key_id: key for key in (current, *self.previous)}

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every configured key, the current one first."""
        return tuple(self._by_id)

    def __iter__(self) -> Iterator[MasterKey]:
        return iter(self._by_id.values())

    def find(self, key_id: str) -> MasterKey:
        """The configured key with ``key_id``.

        Raises:
            VaultKeyError: no configured key has that id.
        """
        try:
            return self._by_id[key_id]
        except KeyError:
            raise VaultKeyError(
                f"sealed with master key {key_id}, which is not configured "
                f"(configured: {', '.join(self._by_id)})",
                key_id=key_id,
            ) from None

    def __repr__(self) -> str:
        previous = [key.key_id for key in self.previous]
        return f"Keyring(current={self.current.key_id!r}, previous={previous!r})"


def credential_aad(org_id: str, credential_id: str) -> bytes:
    """Associated data binding a sealed secret to its credential row.

    Length-prefixed, so no two different (org, id) pairs can produce the same bytes.
    """
    parts = [org_id.encode("utf-8"), credential_id.encode("utf-8")]
    return b"vault_credentials" + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def seal(keyring: Keyring, plaintext: str, aad: bytes) -> str:
    """Encrypt ``plaintext`` for the row described by ``aad`` under ``keyring.current``.

    Returns:
        The ``kpv1.`` token to store. Sealing the same input twice gives different tokens.
    """
    master = keyring.current
    data_key = AESGCM.generate_key(bit_length=256)
    secret_nonce = os.urandom(NONCE_BYTES)
    body = secret_nonce + AESGCM(data_key).encrypt(
        secret_nonce, plaintext.encode("utf-8"), _SECRET_LABEL + aad
    )
    return _token(master.key_id, _wrap(master, data_key, aad), body)


def unseal(keyring: Keyring, token: str, aad: bytes) -> str:
    """Decrypt a token made by :func:`seal` for the same row.

    Raises:
        VaultKeyError: the token was sealed with a master key the keyring does not hold.
        VaultIntegrityError: the token is malformed, was altered, belongs to another row, or
            the key material is wrong. Never returns ciphertext or garbage.
    """
    key_id, wrapped, body = _parse(token)
    data_key = _unwrap(keyring.find(key_id), wrapped, aad)
    try:
        plaintext = AESGCM(data_key).decrypt(
            body[:NONCE_BYTES], body[NONCE_BYTES:], _SECRET_LABEL + aad
        )
    except InvalidTag:
        raise _integrity() from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:  # pragma: no cover - authenticated, so only if seal was bypassed
        raise _integrity() from None


def rewrap(keyring: Keyring, token: str, aad: bytes) -> str:
    """Re-wrap the token's data key with ``keyring.current``; the secret part is kept as is.

    The plaintext secret is never produced. A token already under the current key is
    returned unchanged, so a rotation can be re-run safely.

    Raises:
        VaultKeyError: the token's master key is not in the keyring.
        VaultIntegrityError: as for :func:`unseal` (checked on the wrapped data key).
    """
    key_id, wrapped, body = _parse(token)
    if key_id == keyring.current.key_id:
        return token
    data_key = _unwrap(keyring.find(key_id), wrapped, aad)
    return _token(keyring.current.key_id, _wrap(keyring.current, data_key, aad), body)


def token_key_id(token: str) -> str:
    """The id of the master key a token is sealed with (stored in ``master_key_id``).

    Raises:
        VaultIntegrityError: not a well-formed token.
    """
    return _parse(token)[0]


def _wrap(master: MasterKey, data_key: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + master._aead.encrypt(nonce, data_key, _wrap_aad(master.key_id, aad))


def _unwrap(master: MasterKey, wrapped: bytes, aad: bytes) -> bytes:
    try:
        return master._aead.decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(master.key_id, aad)
        )
    except InvalidTag:
        raise _integrity() from None


def _wrap_aad(key_id: str, aad: bytes) -> bytes:
    return _WRAP_LABEL + key_id.encode("ascii") + b"\x00" + aad


def _token(key_id: str, wrapped: bytes, body: bytes) -> str:
    return ".".join((TOKEN_PREFIX, key_id, _b64(wrapped), _b64(body)))


def _parse(token: str) -> tuple[str, bytes, bytes]:
    if not isinstance(token, str):
        raise _integrity()
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX or not _KEY_ID_RE.match(parts[1]):
        raise _integrity()
    wrapped, body = _unb64(parts[2]), _unb64(parts[3])
    if len(wrapped) != _WRAPPED_BYTES or len(body) < NONCE_BYTES + TAG_BYTES:
        raise _integrity()
    return parts[1], wrapped, body


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64URL_RE.match(text):
        raise _integrity()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _integrity() from None
    # Base64 ignores the spare low bits of the last character; insisting on the canonical
    # spelling makes every bit of the token significant.
    if _b64(raw) != text:
        raise _integrity()
    return raw


def _integrity() -> VaultIntegrityError:
    return VaultIntegrityError(
        "sealed secret failed its integrity check: it was altered, belongs to another "
        "credential, or the master key material is wrong"
    )
