"""Leak response (pure): reported tokens, their labels, the per-project action, and the
signature of GitHub's secret scanning partner program.

GitHub POSTs a JSON array of ``{token, type, url, source}`` signed with ECDSA P-256 / SHA-256
over the raw body (``Github-Public-Key-Identifier`` names the key, ``Github-Public-Key-Signature``
is the base64 DER signature) and reads back an array of ``{token_hash, token_type, label}``
(``true_positive`` / ``false_positive``), where ``token_hash`` is the SHA-256 of the token in
hex: the raw token is never sent back, logged or stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyplane.domain import validation

#: Bounds on what a reporter may send, checked before any work per token.
MAX_BODY_BYTES = 64 * 1024
MAX_TOKENS = 100
MAX_TOKEN_LENGTH = 512
MAX_URL_LENGTH = 2048
MAX_FIELD_LENGTH = 200
#: Bounds on the signature headers (a P-256 DER signature is at most 72 bytes).
MAX_IDENTIFIER_LENGTH = 200
MAX_SIGNATURE_LENGTH = 200
#: Most reporter public keys configured.
MAX_PUBLIC_KEYS = 50


class LeakAction(StrEnum):
    """What happens to a key reported leaked, per project."""

    #: Revoked for good: a public secret is a compromised secret (the default).
    REVOKE = "revoke"
    #: Disabled until someone enables it again.
    DISABLE = "disable"
    #: A new secret (held for its owner by the rotation service); the leaked one stops after a
    #: short grace.
    ROTATE = "rotate"
    #: Nothing changes on the key; the event tells the operator.
    NOTIFY = "notify"


DEFAULT_ACTION = LeakAction.REVOKE


class Label(StrEnum):
    TRUE_POSITIVE = "true_positive"
    FALSE_POSITIVE = "false_positive"


@dataclass(frozen=True, slots=True)
class ReportedToken:
    """One reported match: the token, the reporter's type name, and where it was found."""

    token: str
    type: str
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class TokenLabel:
    token_hash: str
    token_type: str
    label: Label


def token_hash(token: str) -> str:
    """What the answer names a token by: SHA-256 hex (GitHub's ``token_hash``)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_public_keys(document: Any) -> dict[str, ec.EllipticCurvePublicKey]:
    """Reporter keys from GitHub's ``/meta/public_keys/secret_scanning`` document
    (``{"public_keys": [{"key_identifier", "key"}]}``) or a plain ``{identifier: PEM}`` map.

    ValueError when the document is neither, or a key is not an EC P-256 public key.
    """
    if isinstance(document, Mapping) and isinstance(document.get("public_keys"), list):
        pairs = []
        for item in document["public_keys"]:
            if not isinstance(item, Mapping):
                raise ValueError("public_keys holds objects")
            pairs.append((item.get("key_identifier"), item.get("key")))
    elif isinstance(document, Mapping):
        pairs = list(document.items())
    else:
        raise ValueError("expected GitHub's public_keys document or an {identifier: PEM} map")
    if len(pairs) > MAX_PUBLIC_KEYS:
        raise ValueError(f"at most {MAX_PUBLIC_KEYS} public keys")
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for identifier, pem in pairs:
        if not isinstance(identifier, str) or not identifier or not isinstance(pem, str):
            raise ValueError("each key needs a text identifier and a PEM public key")
        if len(identifier) > MAX_IDENTIFIER_LENGTH:
            raise ValueError(f"a key identifier is at most {MAX_IDENTIFIER_LENGTH} characters")
        key = serialization.load_pem_public_key(pem.encode("ascii"))
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError(f"key {identifier!r} is not an ECDSA P-256 public key")
        keys[identifier] = key
    return keys


def load_public_keys_text(text: str) -> dict[str, ec.EllipticCurvePublicKey]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the public keys are not valid JSON: {exc}") from None
    return load_public_keys(document)


def signature_valid(
    keys: Mapping[str, ec.EllipticCurvePublicKey], identifier: str, signature: str, body: bytes
) -> bool | None:
    """Whether ``signature`` (base64 DER) signs ``body`` under the key ``identifier``;
    ``None`` when no such key is configured."""
    key = keys.get(identifier)
    if key is None:
        return None
    try:
        der = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(der, body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_reports(body: bytes) -> list[ReportedToken]:
    """The reported tokens of a request body (a JSON array of ``{token, type, url, source}``).

    ValueError, with a message naming the field and never the token, when the body is not
    such an array within the bounds (count, lengths, clean text).
    """
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"the body is at most {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(document, list):
        raise ValueError("the body is a JSON array of reported tokens")
    if not 1 <= len(document) <= MAX_TOKENS:
        raise ValueError(f"report 1 to {MAX_TOKENS} tokens at a time")
    return [_reported(item, index) for index, item in enumerate(document)]


def _reported(item: Any, index: int) -> ReportedToken:
    if not isinstance(item, Mapping):
        raise ValueError(f"[{index}] is an object")
    token = _text(item, "token", index, MAX_TOKEN_LENGTH, required=True)
    kind = _text(item, "type", index, MAX_FIELD_LENGTH) or "keyplane_api_key"
    url = _text(item, "url", index, MAX_URL_LENGTH)
    source = _text(item, "source", index, MAX_FIELD_LENGTH)
    assert token is not None  # noqa: S101 - required above
    return ReportedToken(token=token, type=kind, url=url, source=source)


def _text(
    item: Mapping[str, Any], name: str, index: int, limit: int, *, required: bool = False
) -> str | None:
    if name not in item:
        if required:
            raise ValueError(f"[{index}].{name} is required")
        return None
    value = item[name]
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"[{index}].{name} is a text of 1 to {limit} characters")
    try:
        validation.check_text(value)
    except ValueError:
        raise ValueError(f"[{index}].{name} holds control characters or invalid unicode") from None
    return value
