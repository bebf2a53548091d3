"""keyplane.webhooks: Standard Webhooks signing, checked against the spec's libraries."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceError_

from keyplane.errors import ValidationError
from keyplane.webhooks import (
    WebhookVerificationError,
    new_secret,
    secret_key,
    sign,
    signature_headers,
    verify,
)

# The vector every Standard Webhooks library tests against (Go, JavaScript, C#, Java: their
# TestWebhookSign / "sign function works" cases in standard-webhooks/standard-webhooks).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_published_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD) == VECTOR_SIGNATURE
    when = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)
    assert sign(VECTOR_SECRET, VECTOR_ID, when, VECTOR_PAYLOAD.encode()) == VECTOR_SIGNATURE


def test_the_test_vector_verifies_at_its_time_and_not_an_hour_later() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    verify(VECTOR_PAYLOAD, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP + 299)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_PAYLOAD, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP + 3600)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify(VECTOR_PAYLOAD, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP - 301)
    verify(
        VECTOR_PAYLOAD, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP + 3600, tolerance_seconds=3600
    )


def test_the_reference_library_and_keyplane_accept_each_others_messages() -> None:
    secret = new_secret()
    now = int(datetime.now(UTC).timestamp())
    payload = '{"type":"key.created","data":{"id":"key_1"}}'
    ours = signature_headers(secret, "msg_1", now, payload)
    assert Webhook(secret).verify(payload, ours) == {"type": "key.created", "data": {"id": "key_1"}}

    theirs = Webhook(secret).sign("msg_2", datetime.fromtimestamp(now, UTC), payload)
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": theirs}
    verify(payload, headers, secret, now=now)

    tampered = dict(ours, **{"webhook-id": "msg_other"})
    with pytest.raises(ReferenceError_):
        Webhook(secret).verify(payload, tampered)
    with pytest.raises(WebhookVerificationError):
        verify(payload, tampered, secret, now=now)


def test_new_secrets_are_distinct_and_32_bytes() -> None:
    one, two = new_secret(), new_secret()
    assert one != two
    assert one.startswith("whsec_")
    assert len(secret_key(one)) == 32


def test_a_rotation_overlap_signs_with_both_and_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = signature_headers([new, old], "msg_r", 1_700_000_000, b"{}")
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(b"{}", headers, old, now=1_700_000_000)
    verify(b"{}", headers, new, now=1_700_000_000)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature"):
        verify(b"{}", headers, new_secret(), now=1_700_000_000)


def test_a_receiver_rotating_its_own_secret_may_pass_several() -> None:
    secret = new_secret()
    headers = signature_headers(secret, "msg_x", 1_700_000_000, b"body")
    verify(b"body", headers, [new_secret(), secret], now=1_700_000_000)


def test_header_names_are_matched_whatever_their_case() -> None:
    secret = new_secret()
    headers = {k.title(): v for k, v in signature_headers(secret, "m", 100, b"x").items()}
    verify(b"x", headers, secret, now=100)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-id": ""}, "missing webhook-id"),
        ({"webhook-timestamp": "12.5"}, "Unix seconds"),
        ({"webhook-timestamp": "-3"}, "Unix seconds"),
        ({"webhook-timestamp": "9" * 40}, "Unix seconds"),
        ({"webhook-signature": "v1"}, "no webhook-signature"),
        ({"webhook-signature": "v1,not*base64"}, "no webhook-signature"),
        ({"webhook-signature": "v2,AAAA"}, "no webhook-signature"),
        ({"webhook-signature": " ".join(["v1,AAAA"] * 17)}, "too many"),
        ({"webhook-signature": "v1," + "A" * 5000}, "too long"),
        ({"webhook-id": "a b"}, "printable"),
    ],
)
def test_malformed_headers_raise_the_verification_error_only(
    change: dict[str, str], message: str
) -> None:
    secret = new_secret()
    headers = signature_headers(secret, "msg", 100, b"x") | change
    with pytest.raises(WebhookVerificationError, match=message):
        verify(b"x", headers, secret, now=100)


def test_a_changed_body_fails() -> None:
    secret = new_secret()
    headers = signature_headers(secret, "msg", 100, b'{"a":1}')
    with pytest.raises(WebhookVerificationError):
        verify(b'{"a":2}', headers, secret, now=100)


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "whsec_***", "whsec_" + base64.b64encode(b"short").decode()],
)
def test_unusable_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValidationError):
        sign(secret, "msg", 1, b"")
    with pytest.raises(WebhookVerificationError):
        verify(
            b"",
            {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,A"},
            secret,
            now=1,
        )


def test_message_ids_that_could_break_a_header_are_refused() -> None:
    for msg_id in ("a\r\nX-Evil: 1", "", "x" * 257):
        with pytest.raises(ValidationError):
            sign(new_secret(), msg_id, 1, b"")


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        sign(new_secret(), "m", datetime(2026, 1, 1), b"")


@given(payload=st.binary(max_size=512), msg_id=st.from_regex(r"[A-Za-z0-9_]{1,40}", fullmatch=True))
def test_what_keyplane_signs_the_reference_verifies(payload: bytes, msg_id: str) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    now = int(datetime.now(UTC).timestamp())
    text = payload.decode("latin-1")
    headers = signature_headers(secret, msg_id, now, text)
    Webhook(secret).verify(text, headers, json_parse=False)
    verify(text, headers, secret, now=now)
