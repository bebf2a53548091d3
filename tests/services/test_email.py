"""EmailSender against a real local SMTP server (aiosmtpd): plain, STARTTLS, AUTH, refusals."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError

from keyplane.errors import EmailDeliveryError, ValidationError
from keyplane.services.email import EmailSender
from keyplane.settings import Settings
from tests.conftest import free_port


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def parsed(self, index: int = 0) -> EmailMessage:
        raw = self.envelopes[index].content
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"bot", b"s3cret!")
    # handled=False: aiosmtpd then answers 535 itself (its default assumes the hook did).
    return AuthResult(success=ok, handled=False)


def _certificate(workdir: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA-less self-signed certificate for 127.0.0.1: server and client contexts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


@pytest.fixture
def plain_smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def tls_smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, ssl.SSLContext]]:
    server_context, client_context = _certificate(tmp_path)
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context,
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        yield inbox, port, client_context
    finally:
        controller.stop()


async def test_a_message_arrives_as_plain_text_and_html(plain_smtp: tuple[Inbox, int]) -> None:
    inbox, port = plain_smtp
    sender = EmailSender(
        host="127.0.0.1", port=port, sender="keyplane@ops.example.com", starttls=False
    )
    await sender.send(
        ["security@company.example", "oncall@company.example"],
        "Key revoked: prod-main",
        "The key prod-main was revoked.",
        "<p>The key <b>prod-main</b> was revoked.</p>",
    )
    (envelope,) = inbox.envelopes
    assert envelope.mail_from == "keyplane@ops.example.com"
    assert envelope.rcpt_tos == ["security@company.example", "oncall@company.example"]
    message = inbox.parsed()
    assert message["Subject"] == "Key revoked: prod-main"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "The key prod-main was revoked."
    assert "<b>prod-main</b>" in html.get_content()


async def test_text_only_is_a_single_part(plain_smtp: tuple[Inbox, int]) -> None:
    inbox, port = plain_smtp
    sender = EmailSender(host="127.0.0.1", port=port, sender="k@ops.example.com", starttls=False)
    await sender.send("a@b.example", "Hello", "Just text")
    assert inbox.parsed().get_content_type() == "text/plain"


async def test_starttls_and_login_are_used_when_required(
    tls_smtp: tuple[Inbox, int, ssl.SSLContext],
) -> None:
    inbox, port, client_context = tls_smtp
    sender = EmailSender(
        host="127.0.0.1",
        port=port,
        sender="k@ops.example.com",
        username="bot",
        password=SecretStr("s3cret!"),
        tls_context=client_context,
    )
    await sender.send("a@b.example", "Over TLS", "body")
    assert len(inbox.envelopes) == 1


async def test_wrong_credentials_fail_without_showing_them(
    tls_smtp: tuple[Inbox, int, ssl.SSLContext],
) -> None:
    inbox, port, client_context = tls_smtp
    sender = EmailSender(
        host="127.0.0.1",
        port=port,
        sender="k@ops.example.com",
        username="bot",
        password=SecretStr("wrong-password"),
        timeout_seconds=3,
        tls_context=client_context,
    )
    with pytest.raises(EmailDeliveryError) as caught:
        await sender.send("a@b.example", "Over TLS", "body")
    assert "SMTPAuthenticationError" in str(caught.value)
    assert "wrong-password" not in str(caught.value)
    assert inbox.envelopes == []


async def test_an_untrusted_certificate_is_refused(
    tls_smtp: tuple[Inbox, int, ssl.SSLContext],
) -> None:
    _inbox, port, _client_context = tls_smtp
    sender = EmailSender(
        host="127.0.0.1",
        port=port,
        sender="k@ops.example.com",
        username="bot",
        password=SecretStr("s3cret!"),
    )
    with pytest.raises(EmailDeliveryError):
        await sender.send("a@b.example", "Over TLS", "body")


async def test_an_unreachable_server_is_a_delivery_error() -> None:
    sender = EmailSender(
        host="127.0.0.1", port=free_port(), sender="k@ops.example.com", timeout_seconds=5
    )
    with pytest.raises(EmailDeliveryError, match="cannot reach"):
        await sender.send("a@b.example", "Hi", "body")


@pytest.mark.parametrize(
    "address",
    [
        "victim@example.com\r\nBcc: everyone@example.com",
        "victim@example.com, other@example.com",
        "Name <victim@example.com>",
        "no-at-sign",
        "a@b",
        "a@[127.0.0.1]",
        '"quoted"@example.com',
        "é@example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        "",
    ],
)
def test_header_injection_and_odd_addresses_are_refused(address: str) -> None:
    sender = EmailSender(host="127.0.0.1", sender="k@ops.example.com")
    with pytest.raises(ValidationError):
        sender.compose(address, "Subject", "body")


@pytest.mark.parametrize(
    "subject", ["Hi\r\nBcc: everyone@example.com", "Hi\nthere", "tab\there", "", "s" * 251]
)
def test_subjects_with_line_breaks_or_control_characters_are_refused(subject: str) -> None:
    sender = EmailSender(host="127.0.0.1", sender="k@ops.example.com")
    with pytest.raises(ValidationError):
        sender.compose("a@b.example", subject, "body")


def test_bounds_on_recipients_and_bodies() -> None:
    sender = EmailSender(host="127.0.0.1", sender="k@ops.example.com")
    with pytest.raises(ValidationError, match="recipients"):
        sender.compose([f"u{i}@b.example" for i in range(51)], "s", "body")
    with pytest.raises(ValidationError, match="recipients"):
        sender.compose([], "s", "body")
    with pytest.raises(ValidationError, match="body"):
        sender.compose("a@b.example", "s", "x" * (256 * 1024 + 1))
    with pytest.raises(ValidationError, match="both"):
        EmailSender(host="h", sender="k@ops.example.com", username="only-name")
    with pytest.raises(ValidationError):
        EmailSender(host="h", sender="Keyplane <k@ops.example.com>")


def test_the_sender_comes_from_settings_or_is_absent() -> None:
    assert EmailSender.from_settings(Settings()) is None
    with pytest.raises(PydanticValidationError, match="SMTP_FROM"):
        Settings(smtp_host="mail.example.com")
    with pytest.raises(PydanticValidationError, match="together"):
        Settings(smtp_host="h", smtp_from="k@ops.example.com", smtp_username="bot")
    sender = EmailSender.from_settings(
        Settings(
            smtp_host="mail.example.com",
            smtp_port=465,
            smtp_from="k@ops.example.com",
            smtp_username="bot",
            smtp_password=SecretStr("pw"),
        )
    )
    assert sender is not None
    assert (sender.host, sender.port, sender.username) == ("mail.example.com", 465, "bot")
    assert "pw" not in repr(vars(sender))
