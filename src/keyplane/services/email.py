"""Email notifications: one message, plain text and HTML, over SMTP.

Uses ``aiosmtplib`` (asyncio-native, typed, maintained; STARTTLS, implicit TLS and AUTH), so
a slow mail server holds a coroutine, not one of the few worker threads.

Header injection is made impossible twice: every address and the subject are checked here
(no CR, LF or other control characters, one plain ``local@domain`` per address, bounded
lengths), and the message is built by the standard library's ``EmailMessage`` under the SMTP
policy, which itself refuses a header value containing a line break.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

import aiosmtplib
from pydantic import SecretStr

from keyplane.errors import ConfigurationError, EmailDeliveryError, ValidationError

if TYPE_CHECKING:
    from keyplane.settings import Settings

MAX_RECIPIENTS = 50
MAX_SUBJECT_LENGTH = 250
MAX_BODY_CHARACTERS = 256 * 1024
MAX_ADDRESS_LENGTH = 254
IMPLICIT_TLS_PORT = 465

# One addr-spec of the common shape: dot-atom local part, a dotted host name. Quoted local
# parts, comments, display names and IP-literal domains are refused on purpose: notification
# addresses do not need them, and each is a place where parsers disagree.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)


def check_address(address: str) -> str:
    """``address`` when it is one plain ``local@domain`` email address.

    Raises:
        ValidationError: anything else (display names, several addresses, line breaks, ...).
    """
    if len(address) > MAX_ADDRESS_LENGTH or _ADDRESS.fullmatch(address) is None:
        raise ValidationError(
            f"{address[:60]!r} is not a plain email address (local@domain, ASCII)"
        )
    local = address.rpartition("@")[0]
    if len(local) > 64:
        raise ValidationError("the part of an email address before @ is at most 64 characters")
    return address


def check_subject(subject: str) -> str:
    """``subject`` when it is one line of at most 250 characters without control characters."""
    if not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise ValidationError(f"an email subject is 1-{MAX_SUBJECT_LENGTH} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in subject):
        raise ValidationError("an email subject has no line breaks or control characters")
    return subject


class EmailSender:
    """Sends notification emails through one SMTP server.

    Args:
        host, port: the SMTP server. Port 465 speaks TLS from the first byte; any other port
            starts in clear text and upgrades with STARTTLS when ``starttls`` is set.
        username, password: SMTP AUTH credentials, both or neither.
        sender: the ``From`` address.
        starttls: require STARTTLS (refuse to send when the server does not offer it).
        timeout_seconds: bound on each SMTP step.
        tls_context: trust settings (the system's store by default; tests pass their CA).
    """

    def __init__(
        self,
        *,
        host: str,
        sender: str,
        port: int = 587,
        username: str | None = None,
        password: SecretStr | None = None,
        starttls: bool = True,
        timeout_seconds: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValidationError("SMTP credentials need both a user name and a password")
        self.host = host
        self.port = port
        self.sender = check_address(sender)
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout_seconds = timeout_seconds
        self._tls_context = tls_context

    @classmethod
    def from_settings(
        cls, settings: Settings, *, tls_context: ssl.SSLContext | None = None
    ) -> EmailSender | None:
        """The sender the settings describe, or ``None`` when no SMTP host is set."""
        if settings.smtp_host is None:
            return None
        if settings.smtp_from is None:  # the settings refuse this; kept for type narrowing
            raise ConfigurationError("KEYPLANE_SMTP_FROM is needed with KEYPLANE_SMTP_HOST")
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout_seconds=settings.smtp_timeout_seconds,
            tls_context=tls_context,
        )

    def compose(
        self, to: str | Sequence[str], subject: str, text: str, html: str | None = None
    ) -> EmailMessage:
        """The message ``send`` would send: ``multipart/alternative`` when ``html`` is given.

        Raises:
            ValidationError: a bad address or subject, too many recipients, a huge body.
        """
        recipients = [to] if isinstance(to, str) else list(to)
        if not 1 <= len(recipients) <= MAX_RECIPIENTS:
            raise ValidationError(f"an email goes to 1-{MAX_RECIPIENTS} recipients")
        for recipient in recipients:
            check_address(recipient)
        check_subject(subject)
        if len(text) > MAX_BODY_CHARACTERS or len(html or "") > MAX_BODY_CHARACTERS:
            raise ValidationError(f"an email body is at most {MAX_BODY_CHARACTERS} characters")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2])
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        return message

    async def send(
        self, to: str | Sequence[str], subject: str, text: str, html: str | None = None
    ) -> None:
        """Send one message to ``to``.

        Raises:
            ValidationError: bad input (see ``compose``); nothing is sent.
            EmailDeliveryError: the server could not be reached or refused the message. The
                message names the SMTP failure, never the credentials.
        """
        message = self.compose(to, subject, text, html)
        implicit_tls = self.port == IMPLICIT_TLS_PORT
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=None if self._password is None else self._password.get_secret_value(),
                use_tls=implicit_tls,
                start_tls=None if implicit_tls else self.starttls,
                timeout=self.timeout_seconds,
                tls_context=self._tls_context,
            )
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError, OSError) as exc:
            raise EmailDeliveryError(
                f"cannot reach the SMTP server {self.host}:{self.port}: {type(exc).__name__}"
            ) from None
        except aiosmtplib.SMTPException as exc:
            raise EmailDeliveryError(
                f"email to {len(message['To'].split(','))} recipient(s) failed: "
                f"{type(exc).__name__}: {_first_line(str(exc))}"
            ) from None


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text else ""
