"""Signing requests for a key whose policy requires it (docs/signing.md): an ``httpx.Auth``.

For the operator's customers: each request gets the API key, a timestamp, a fresh nonce, the
SHA-256 of its body and the HMAC-SHA256 of the canonical request under the key's signing
secret (shown once, with the key). Self-contained on purpose (httpx and the standard library
only), so customers can vendor this file; ``tests/client/test_signing.py`` holds it to the
server's own canonical form.

Example::

    import httpx
    from keyplane.client.signing import SignedRequests

    auth = SignedRequests(api_key="kp_live_...", signing_secret="kps_...")
    with httpx.Client(base_url="https://api.example.com", auth=auth) as client:
        client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Generator

import httpx

SCHEME = "KEYPLANE-HMAC-SHA256"
SIGNATURE_HEADER = "X-Keyplane-Signature"
TIMESTAMP_HEADER = "X-Keyplane-Timestamp"
NONCE_HEADER = "X-Keyplane-Nonce"
CONTENT_SHA256_HEADER = "X-Keyplane-Content-SHA256"


def _new_nonce() -> str:
    return secrets.token_urlsafe(24)  # 32 characters of A-Z a-z 0-9 - _


def signature(
    signing_secret: str,
    method: str,
    path: str,
    query: str,
    timestamp: str,
    nonce: str,
    body_sha256: str,
) -> str:
    """The lower-case hex HMAC-SHA256 of the canonical request (docs/signing.md)."""
    canonical = "\n".join((SCHEME, method.upper(), path, query, timestamp, nonce, body_sha256))
    return hmac.new(
        signing_secret.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256
    ).hexdigest()


class SignedRequests(httpx.Auth):
    """Adds the API key and a fresh signature to every request (sync and async clients).

    Args:
        api_key: the key, sent as ``Authorization: Bearer <key>`` (or in ``key_header``).
        signing_secret: the key's signing secret (``kps_...``).
        key_header: where the key goes; ``Authorization`` means the Bearer form.
        now: Unix time in seconds (tests pass a fixed clock).
        nonce: makes each request's nonce (16-128 characters of ``A-Za-z0-9._~-``).
    """

    requires_request_body = True

    def __init__(
        self,
        api_key: str,
        signing_secret: str,
        *,
        key_header: str = "Authorization",
        now: Callable[[], float] = time.time,
        nonce: Callable[[], str] = _new_nonce,
    ) -> None:
        self._api_key = api_key
        self._secret = signing_secret
        self._key_header = key_header
        self._now = now
        self._nonce = nonce

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._key_header.lower() == "authorization":
            request.headers["Authorization"] = f"Bearer {self._api_key}"
        else:
            request.headers[self._key_header] = self._api_key
        # The target exactly as it goes on the wire: percent-encoding as sent, query unsorted.
        path, _, query = request.url.raw_path.decode("ascii").partition("?")
        timestamp = str(int(self._now()))
        nonce = self._nonce()
        body_sha256 = hashlib.sha256(request.content).hexdigest()
        request.headers[TIMESTAMP_HEADER] = timestamp
        request.headers[NONCE_HEADER] = nonce
        request.headers[CONTENT_SHA256_HEADER] = body_sha256
        request.headers[SIGNATURE_HEADER] = signature(
            self._secret, request.method, path, query, timestamp, nonce, body_sha256
        )
        yield request
