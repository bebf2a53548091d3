"""Request signing: the canonical request, its HMAC-SHA256, and the checks verify makes.

Keyplane stores only a keyed hash of an API key, so it cannot check an HMAC keyed with the key
itself. A key whose policy requires signing therefore gets a separate signing secret
(``kps_...``), shown once with the key; the client signs each request with it and Keyplane,
holding it sealed at rest and in memory once the key is loaded, checks the signature.

The canonical request (docs/signing.md) is seven lines joined by ``\\n``, UTF-8::

    KEYPLANE-HMAC-SHA256
    <METHOD>              upper case, e.g. POST
    <path>                as sent, percent-encoding untouched, e.g. /v1/chat/completions
    <query>               the raw query string as sent, without "?"; empty when none
    <timestamp>           Unix seconds as sent in the header; empty when not sent
    <nonce>               as sent in the header; empty when not sent
    <body sha256>         lower-case hex SHA-256 of the body bytes (of b"" when there is none)

and the signature is the lower-case hex HMAC-SHA256 of it under the signing secret's UTF-8
bytes. Every input is bounded before any work: what a caller sends may not cost more than
one HMAC over a few kilobytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from keyplane.domain.decisions import Code

SCHEME = "KEYPLANE-HMAC-SHA256"
ALGORITHM = "HMAC-SHA256"
SECRET_PREFIX = "kps_"  # noqa: S105 (a prefix, not a secret)
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

DEFAULT_MAX_AGE = 300
MAX_MAX_AGE = 86_400
MIN_NONCE_LENGTH = 16
MAX_NONCE_LENGTH = 128
MAX_PATH_LENGTH = 4096
MAX_QUERY_LENGTH = 4096
MAX_METHOD_LENGTH = 16
MAX_TIMESTAMP_LENGTH = 12

#: Nonces: URL-safe characters only, so they travel in a header and a Redis key unchanged.
NONCE = re.compile(rf"[A-Za-z0-9._~-]{{{MIN_NONCE_LENGTH},{MAX_NONCE_LENGTH}}}", re.ASCII)
HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
METHOD = re.compile(rf"[A-Za-z]{{1,{MAX_METHOD_LENGTH}}}", re.ASCII)
TIMESTAMP = re.compile(rf"[0-9]{{1,{MAX_TIMESTAMP_LENGTH}}}", re.ASCII)


def new_secret() -> str:
    """A fresh signing secret: ``kps_`` and 256 random bits, URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class SigningRule:
    """A compiled ``signing`` section; only present when signing is required."""

    max_age: int = DEFAULT_MAX_AGE
    require_timestamp: bool = True
    require_nonce: bool = True


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the gateway tells verify about a signed request; all text as sent.

    Built only through :func:`signed_request`, which bounds and checks every part.
    """

    signature: str
    method: str
    path: str
    query: str = ""
    timestamp: str | None = None
    nonce: str | None = None
    body_sha256: str = EMPTY_BODY_SHA256


def _printable(text: str, limit: int) -> bool:
    return len(text) <= limit and text.isascii() and text.isprintable()


def signed_request(
    signature: str,
    method: str,
    path: str,
    query: str | None = None,
    timestamp: str | None = None,
    nonce: str | None = None,
    body_sha256: str | None = None,
) -> SignedRequest | None:
    """The request's signing parts, or ``None`` when one is malformed (SIGNATURE_INVALID).

    A nonce outside 16-128 URL-safe characters, a timestamp that is not 1-12 digits, a
    signature or body hash that is not 64 hex digits: all malformed, checked before any HMAC.
    """
    if not HEX_SHA256.fullmatch(signature) or not METHOD.fullmatch(method):
        return None
    if not path.startswith("/") or not _printable(path, MAX_PATH_LENGTH) or " " in path:
        return None
    query = query or ""
    if not _printable(query, MAX_QUERY_LENGTH) or " " in query:
        return None
    if timestamp is not None and not TIMESTAMP.fullmatch(timestamp):
        return None
    if nonce is not None and not NONCE.fullmatch(nonce):
        return None
    body = EMPTY_BODY_SHA256 if body_sha256 is None else body_sha256
    if not HEX_SHA256.fullmatch(body):
        return None
    return SignedRequest(
        signature.lower(), method.upper(), path, query, timestamp, nonce, body.lower()
    )


def canonical_request(
    method: str,
    path: str,
    query: str,
    timestamp: str | None,
    nonce: str | None,
    body_sha256: str,
) -> bytes:
    """The bytes that are signed (see the module docstring)."""
    lines = (SCHEME, method.upper(), path, query, timestamp or "", nonce or "", body_sha256)
    return "\n".join(lines).encode("utf-8")


def sign(
    secret: str,
    method: str,
    path: str,
    query: str = "",
    timestamp: str | None = None,
    nonce: str | None = None,
    body_sha256: str = EMPTY_BODY_SHA256,
) -> str:
    """The lower-case hex signature of a request under ``secret``."""
    message = canonical_request(method, path, query, timestamp, nonce, body_sha256)
    # hmac.digest: OpenSSL's one-shot HMAC, no Python HMAC object per request.
    return hmac.digest(secret.encode("utf-8"), message, "sha256").hex()


def check(
    rule: SigningRule, secret: str | None, request: SignedRequest | None, now: int
) -> Code | None:
    """``None`` when the request is signed as the rule asks, else the code that refuses it.

    The nonce is not looked at beyond its shape: remembering it (exactly once, across
    instances) is the caller's next step, only after this check passes. Order: signature
    (constant-time), then timestamp age, so an unsigned request learns nothing about time.
    """
    if secret is None or request is None:
        return Code.SIGNATURE_INVALID
    if rule.require_timestamp and request.timestamp is None:
        return Code.SIGNATURE_INVALID
    if rule.require_nonce and request.nonce is None:
        return Code.SIGNATURE_INVALID
    expected = sign(
        secret,
        request.method,
        request.path,
        request.query,
        request.timestamp,
        request.nonce,
        request.body_sha256,
    )
    if not hmac.compare_digest(expected, request.signature):
        return Code.SIGNATURE_INVALID
    if request.timestamp is not None and abs(now - int(request.timestamp)) > rule.max_age:
        return Code.TIMESTAMP_EXPIRED
    return None


def nonce_lifetime(rule: SigningRule, request: SignedRequest, now: int) -> int:
    """Seconds a nonce must be remembered: until its timestamp leaves the accepted window.

    A timestamp may be up to ``max_age`` ahead of now (clock skew), so a nonce can need up to
    twice ``max_age``; without a timestamp (not required) ``max_age`` itself.
    """
    if request.timestamp is None:
        return rule.max_age
    return max(1, int(request.timestamp) + rule.max_age - now + 1)
