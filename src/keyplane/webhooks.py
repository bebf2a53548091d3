"""Signing and verifying webhooks the Standard Webhooks way (https://www.standardwebhooks.com/).

Keyplane signs what it sends with this module, and a receiver verifies with it::

    from keyplane.webhooks import verify

    verify(request_body, request.headers, "whsec_...")  # raises WebhookVerificationError

The scheme (spec section "Signature scheme"): a secret is ``whsec_`` followed by the base64 of
24 to 64 random bytes; the signed content is ``f"{msg_id}.{timestamp}.{payload}"``; the
signature is ``v1,`` followed by the base64 of its HMAC-SHA256. Three headers carry them:
``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``, which holds
several space-separated signatures while a secret is being rotated.

This module needs nothing but the standard library and ``keyplane.errors``, so SDK users can
import it without the server's dependencies. It is written here rather than taken from the
``standardwebhooks`` package (which the tests check it against): that package's ``verify``
reads the wall clock itself with a fixed five-minute tolerance, takes one secret, and lets
malformed headers escape as ``ValueError`` or ``binascii.Error`` instead of its own error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from keyplane.errors import ValidationError, WebhookVerificationError

__all__ = [
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "new_secret",
    "sign",
    "signature_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
DEFAULT_TOLERANCE_SECONDS = 300

#: Random bytes in a new secret; the spec asks for 24 to 64.
SECRET_BYTES = 32
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64
#: Bounds on what a receiver parses before any HMAC is computed: a hostile sender could
#: otherwise make it hash the body once per signature in an endless header.
MAX_MESSAGE_ID_LENGTH = 256
MAX_SIGNATURES = 16
_MAX_SIGNATURE_HEADER = 4096
_SIGNATURE_VERSION = "v1"


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key inside ``secret`` (``whsec_<base64>``; the prefix may be left out).

    Raises:
        ValidationError: not base64, or fewer than 24 or more than 64 bytes.
    """
    text = secret.removeprefix(SECRET_PREFIX).strip()
    if not text or len(text) > 2 * _MAX_SECRET_BYTES:
        raise ValidationError("a webhook secret is whsec_ followed by base64 of 24-64 bytes")
    try:
        # Unpadded base64 is common in the wild; extra padding is ignored by b64decode.
        key = base64.b64decode(text + "==", validate=False)
    except (binascii.Error, ValueError):
        raise ValidationError("a webhook secret is whsec_ followed by base64") from None
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise ValidationError("a webhook secret is whsec_ followed by base64 of 24-64 bytes")
    return key


def _timestamp_of(timestamp: int | datetime) -> int:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValidationError("a webhook timestamp needs a time zone")
        return int(timestamp.timestamp())
    return int(timestamp)


def _payload_bytes(payload: bytes | str) -> bytes:
    return payload.encode("utf-8") if isinstance(payload, str) else payload


def _check_message_id(msg_id: str) -> None:
    # It travels in a header: no whitespace or control characters, and a bounded length.
    if (
        not msg_id
        or len(msg_id) > MAX_MESSAGE_ID_LENGTH
        or any(ord(char) <= 32 or ord(char) >= 127 for char in msg_id)
    ):
        raise ValidationError(
            f"a webhook id is 1-{MAX_MESSAGE_ID_LENGTH} printable ASCII characters, no spaces"
        )


def _digest(key: bytes, msg_id: str, timestamp: int, payload: bytes) -> bytes:
    content = f"{msg_id}.{timestamp}.".encode() + payload
    return hmac.new(key, content, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int | datetime, payload: bytes | str) -> str:
    """The signature ``v1,<base64 HMAC-SHA256>`` of ``f"{msg_id}.{timestamp}.{payload}"``.

    Args:
        secret: ``whsec_<base64>``.
        msg_id: the message id, the same across retries of one message.
        timestamp: Unix seconds (or an aware datetime) of this attempt.
        payload: the exact body sent, bytes or text (encoded as UTF-8).
    """
    _check_message_id(msg_id)
    digest = _digest(secret_key(secret), msg_id, _timestamp_of(timestamp), _payload_bytes(payload))
    return f"{_SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_headers(
    secrets: str | Sequence[str],
    msg_id: str,
    timestamp: int | datetime,
    payload: bytes | str,
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt.

    Several secrets (during a rotation overlap) give several space-separated signatures, so a
    receiver holding either the old or the new secret accepts the message.
    """
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValidationError("at least one webhook secret is needed to sign")
    if len(keys) > MAX_SIGNATURES:
        raise ValidationError(f"at most {MAX_SIGNATURES} webhook secrets sign one message")
    seconds = _timestamp_of(timestamp)
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(seconds),
        HEADER_SIGNATURE: " ".join(sign(key, msg_id, seconds, payload) for key in keys),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    # Header names are case-insensitive; a plain dict from a framework may keep any case.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise WebhookVerificationError(f"missing {name} header")
    return value


def _now_seconds(now: float | datetime | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return now.timestamp()
    return float(now)


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | datetime | None = None,
) -> None:
    """Check that ``payload`` and ``headers`` were signed with ``secret`` and are recent.

    Args:
        payload: the raw request body, exactly as received (before any JSON parsing).
        headers: the request headers (any mapping; names are matched case-insensitively).
        secret: ``whsec_...``, or several during your own rotation (any one may match).
        tolerance_seconds: how far ``webhook-timestamp`` may be from now, either way; it
            bounds how long a captured request can be replayed.
        now: the current time (Unix seconds or aware datetime); the wall clock by default.

    Raises:
        WebhookVerificationError: a header missing or malformed, the timestamp outside the
            tolerance, or no ``v1`` signature matching. Also raised for a malformed secret.
    """
    msg_id = _header(headers, HEADER_ID)
    raw_timestamp = _header(headers, HEADER_TIMESTAMP)
    raw_signatures = _header(headers, HEADER_SIGNATURE)
    try:
        _check_message_id(msg_id)
    except ValidationError as exc:
        raise WebhookVerificationError(exc.message) from None
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit() or len(raw_timestamp) > 12:
        raise WebhookVerificationError("webhook-timestamp is not Unix seconds")
    timestamp = int(raw_timestamp)
    current = _now_seconds(now)
    if timestamp < current - tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > current + tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")
    if len(raw_signatures) > _MAX_SIGNATURE_HEADER:
        raise WebhookVerificationError("webhook-signature is too long")
    offered = raw_signatures.split()
    if len(offered) > MAX_SIGNATURES:
        raise WebhookVerificationError("webhook-signature holds too many signatures")
    candidates: list[bytes] = []
    for item in offered:
        version, comma, encoded = item.partition(",")
        if not comma or version != _SIGNATURE_VERSION:
            continue  # another scheme (v1a: asymmetric) or noise: not ours to judge
        try:
            candidates.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    secret_list = [secret] if isinstance(secret, str) else list(secret)
    try:
        keys = [secret_key(one) for one in secret_list]
    except ValidationError as exc:
        raise WebhookVerificationError(exc.message) from None
    body = _payload_bytes(payload)
    for key in keys:
        expected = _digest(key, msg_id, timestamp, body)
        # Compare against every candidate, constant-time each, without stopping early on the
        # key: timing then reveals nothing about which part of which signature matched.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return
    raise WebhookVerificationError("no webhook-signature matches the secret")
