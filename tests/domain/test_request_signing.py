"""The canonical request and the signature checks, pure; the SDK's signer agrees with them."""

from __future__ import annotations

import hashlib

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.client.signing import SignedRequests, signature
from keyplane.domain import request_signing as rs
from keyplane.domain.decisions import Code

SECRET = "kps_" + "s" * 43
NOW = 1_764_816_000
RULE = rs.SigningRule(max_age=300)


def parts(**changes: str) -> rs.SignedRequest:
    values = {"method": "POST", "path": "/v1/x", "query": "b=2&a=1", "timestamp": str(NOW)}
    values.update({"nonce": "n" * 16, "body_sha256": rs.EMPTY_BODY_SHA256, **changes})
    sig = rs.sign(SECRET, **values)  # type: ignore[arg-type]
    signed = rs.signed_request(sig, **values)  # type: ignore[arg-type]
    assert signed is not None
    return signed


def test_the_canonical_request_is_seven_lines() -> None:
    assert rs.canonical_request("post", "/p", "q=1", "5", "nonce", "ab") == (
        b"KEYPLANE-HMAC-SHA256\nPOST\n/p\nq=1\n5\nnonce\nab"
    )
    assert rs.canonical_request("GET", "/p", "", None, None, "ab").endswith(b"\n\n\n\nab")


def test_checks_in_order() -> None:
    assert rs.check(RULE, SECRET, parts(), NOW) is None
    assert rs.check(RULE, None, parts(), NOW) is Code.SIGNATURE_INVALID  # no secret issued
    assert rs.check(RULE, SECRET, None, NOW) is Code.SIGNATURE_INVALID
    assert rs.check(RULE, "kps_other", parts(), NOW) is Code.SIGNATURE_INVALID
    assert rs.check(RULE, SECRET, parts(timestamp=str(NOW - 301)), NOW) is Code.TIMESTAMP_EXPIRED
    assert rs.check(RULE, SECRET, parts(timestamp=str(NOW + 300)), NOW) is None
    # A bad signature is SIGNATURE_INVALID even when old: unsigned callers learn nothing.
    old = parts(timestamp="1")
    forged = rs.SignedRequest("0" * 64, old.method, old.path, old.query, old.timestamp, old.nonce)
    assert rs.check(RULE, SECRET, forged, NOW) is Code.SIGNATURE_INVALID


def test_nonces_live_until_their_timestamp_cannot_pass() -> None:
    assert rs.nonce_lifetime(RULE, parts(), NOW) == 301
    assert rs.nonce_lifetime(RULE, parts(timestamp=str(NOW + 300)), NOW) == 601
    assert rs.nonce_lifetime(RULE, parts(timestamp=str(NOW - 300)), NOW) == 1


@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=st.from_regex(r"/[A-Za-z0-9/%._~-]{0,40}", fullmatch=True),
    query=st.from_regex(r"[A-Za-z0-9=&%._~-]{0,40}", fullmatch=True),
    body=st.binary(max_size=200),
)
@settings(max_examples=60, deadline=None)
def test_the_sdk_signs_what_the_server_checks(
    method: str, path: str, query: str, body: bytes
) -> None:
    url = f"https://api.example.com{path}" + (f"?{query}" if query else "")
    request = httpx.Request(method, url, content=body)
    signer = SignedRequests("kp_live_x", SECRET, now=lambda: NOW, nonce=lambda: "n" * 20)
    sent = next(signer.auth_flow(request))
    target = sent.url.raw_path.decode()
    sent_path, _, sent_query = target.partition("?")
    signed = rs.signed_request(
        sent.headers["X-Keyplane-Signature"],
        method,
        sent_path,
        sent_query,
        sent.headers["X-Keyplane-Timestamp"],
        sent.headers["X-Keyplane-Nonce"],
        sent.headers["X-Keyplane-Content-SHA256"],
    )
    assert sent.headers["X-Keyplane-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert rs.check(RULE, SECRET, signed, NOW) is None
    assert (
        signature(
            SECRET,
            method,
            sent_path,
            sent_query,
            str(NOW),
            "n" * 20,
            hashlib.sha256(body).hexdigest(),
        )
        == sent.headers["X-Keyplane-Signature"]
    )
