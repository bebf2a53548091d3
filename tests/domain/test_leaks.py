"""Leak reports and reporter keys (pure): GitHub's key document and a plain map load, anything
else is refused; signatures verify only over the exact bytes; report bodies are bounded."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyplane.domain.leaks import (
    MAX_TOKENS,
    load_public_keys,
    load_public_keys_text,
    parse_reports,
    signature_valid,
    token_hash,
)

_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_github_document_and_plain_map_load_the_same_keys() -> None:
    github = {"public_keys": [{"key_identifier": "abc", "key": _pem(_KEY), "is_current": True}]}
    assert set(load_public_keys(github)) == {"abc"}
    assert set(load_public_keys_text(json.dumps({"abc": _pem(_KEY)}))) == {"abc"}


@pytest.mark.parametrize(
    "document",
    [
        [],
        "pem",
        {"public_keys": ["x"]},
        {"abc": 1},
        {"": _pem(_KEY)},
        {"abc": "not a pem"},
        {"abc": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))},
        {"abc": _pem(ec.generate_private_key(ec.SECP384R1()))},
        {f"k{n}": _pem(_KEY) for n in range(51)},
    ],
)
def test_anything_but_p256_keys_is_refused(document: object) -> None:
    with pytest.raises(ValueError):
        load_public_keys(document)


def test_signature_over_the_exact_bytes_only() -> None:
    keys = load_public_keys({"abc": _pem(_KEY)})
    body = b'[{"token":"x"}]'
    signature = base64.b64encode(_KEY.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    assert signature_valid(keys, "abc", signature, body) is True
    assert signature_valid(keys, "abc", signature, body + b"\n") is False
    assert signature_valid(keys, "abc", "bm90IGEgc2lnbmF0dXJl", body) is False
    assert signature_valid(keys, "abc", "***", body) is False
    assert signature_valid(keys, "other", signature, body) is None


def test_report_bodies_are_bounded_and_errors_never_hold_the_token() -> None:
    token = "kp_live_" + "S" * 36
    [parsed] = parse_reports(json.dumps([{"token": token, "url": "https://x"}]).encode())
    assert parsed.token == token and parsed.type == "keyplane_api_key" and parsed.source is None
    assert token_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    for body in (
        b"",
        b"{}",
        b"[]",
        json.dumps([{"token": token}] * (MAX_TOKENS + 1)).encode(),
        json.dumps([{"token": token + "\u0000"}]).encode(),
        json.dumps([{"token": token, "url": None}]).encode(),
        json.dumps([{"token": token, "type": "t" * 201}]).encode(),
        json.dumps([token]).encode(),
        b"[" * 100_000,
    ):
        with pytest.raises(ValueError) as refused:
            parse_reports(body)
        assert "SSSS" not in str(refused.value)
