"""OutboundGuard: static URL checks, and deliveries that connect only where they may."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyplane.domain.network import IpAddress
from keyplane.errors import ValidationError
from keyplane.services.outbound import OutboundGuard, system_resolver
from keyplane.settings import Settings

LOOPBACK = [ip_network("127.0.0.0/8")]


@dataclass
class Receiver:
    """A real local HTTP server whose answer each test chooses."""

    port: int = 0
    answer: bytes = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    stall: bool = False
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            self.requests.append(head + body)
            if self.stall:
                await asyncio.sleep(3600)
            writer.write(self.answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        # Handlers parked in a stall are cancelled rather than awaited.
        for task in asyncio.all_tasks():
            if task.get_coro().__qualname__.startswith("Receiver.handle"):  # type: ignore[union-attr]
                task.cancel()


def fixed_resolver(*answers: str, calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> Sequence[IpAddress]:
        if calls is not None:
            calls.append(host)
        return [ip_address(answer) for answer in answers]

    return resolve


# --- static checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://10.0.0.1/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:7f00:1]/hook",
        "https://0.0.0.0/",
        "https://[fd00:ec2::254]/",
    ],
)
def test_literal_internal_addresses_are_refused_at_registration(url: str) -> None:
    with pytest.raises(ValidationError, match="cannot be sent there"):
        OutboundGuard().check_url(url)


@pytest.mark.parametrize(
    "url", ["https://2130706433/", "https://0177.0.0.1/", "https://0x7f.1/", "https://127.1/"]
)
def test_decimal_octal_and_short_ip_forms_are_refused(url: str) -> None:
    # httpx itself already rejects some forms; the rest are named for what they mean.
    with pytest.raises(ValidationError, match=r"as 127\.0\.0\.1|not a valid URL"):
        OutboundGuard(allow_networks=LOOPBACK).check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/hook", "must use https"),
        ("ftp://example.com/", "must use https"),
        ("https://user:pw@example.com/", "no user name"),
        ("https://example.com/#frag", "fragment"),
        ("https://example.com/" + "a" * 2100, "at most 2048"),
        ("https://exa mple.com/", "no spaces"),
        ("https://example.com/\r\nX: y", "no spaces"),
        ("https:///nohost", "host"),
        ("not a url", "no spaces"),
        ("https://1.2.3.999/", "not a valid URL"),
        ("https://host.123/", "neither a host name"),
        ("https://[fe80::1%25eth0]/", "zone id|not a valid URL"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OutboundGuard().check_url(url)


def test_http_and_allowlisted_networks_pass_when_the_operator_says_so() -> None:
    guard = OutboundGuard(allow_http=True, allow_networks=LOOPBACK)
    assert guard.check_url("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/hook"
    assert OutboundGuard().check_url("https://hooks.example.com/a?b=1") == (
        "https://hooks.example.com/a?b=1"
    )
    with pytest.raises(ValidationError):
        guard.check_url("http://10.0.0.1/")


def test_settings_build_the_guard() -> None:
    settings = Settings(
        webhook_allow_networks="127.0.0.0/8, 10.1.0.0/16",  # type: ignore[arg-type]
        webhook_allow_http=True,
        webhook_timeout_seconds=3,
        webhook_max_response_bytes=100,
    )
    guard = OutboundGuard.from_settings(settings)
    assert guard.allow_networks == (ip_network("127.0.0.0/8"), ip_network("10.1.0.0/16"))
    assert (guard.allow_http, guard.timeout_seconds, guard.max_response_bytes) == (True, 3, 100)
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(webhook_allow_networks="nonsense")  # type: ignore[arg-type]


# --- deliveries ---------------------------------------------------------------------------------


async def test_a_delivery_reaches_an_allowlisted_receiver(receiver: Receiver) -> None:
    guard = OutboundGuard(allow_http=True, allow_networks=LOOPBACK)
    try:
        result = await guard.post(
            f"http://127.0.0.1:{receiver.port}/hook?x=1",
            b'{"type":"ping"}',
            {"content-type": "application/json", "webhook-id": "msg_1"},
        )
    finally:
        await guard.aclose()
    assert (result.status, result.error, result.ok) == (204, None, True)
    assert result.latency_ms >= 0
    (request,) = receiver.requests
    assert request.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    assert b"webhook-id: msg_1" in request
    assert request.endswith(b'{"type":"ping"}')


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "2130706433", "localhost"])
async def test_loopback_is_refused_at_delivery_without_the_allowlist(
    receiver: Receiver, host: str
) -> None:
    guard = OutboundGuard(allow_http=True)
    result = await guard.post(f"http://{host}:{receiver.port}/", b"{}", {})
    await guard.aclose()
    assert result.status is None
    assert result.error is not None
    assert result.error.startswith("refused:")
    assert receiver.requests == []


@pytest.mark.parametrize(
    "answer", ["127.0.0.1", "169.254.169.254", "::1", "10.0.0.1", "::ffff:127.0.0.1"]
)
async def test_a_name_resolving_to_an_internal_address_is_refused(answer: str) -> None:
    guard = OutboundGuard(resolver=fixed_resolver(answer))
    result = await guard.post("https://hooks.example.test/", b"{}", {})
    assert result.status is None
    assert result.error is not None
    assert "hooks.example.test resolves to" in result.error


async def test_a_name_with_one_internal_answer_among_public_ones_is_refused() -> None:
    guard = OutboundGuard(resolver=fixed_resolver("93.184.215.14", "127.0.0.1"))
    result = await guard.post("https://mixed.example.test/", b"{}", {})
    assert result.error is not None
    assert "127.0.0.1 is loopback" in result.error


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    receiver: Receiver,
) -> None:
    # The name exists nowhere but in the injected resolver: the request can only arrive if the
    # guard connected to the address it resolved and checked, not to a second lookup's answer.
    calls: list[str] = []
    guard = OutboundGuard(
        allow_http=True,
        allow_networks=LOOPBACK,
        resolver=fixed_resolver("127.0.0.1", calls=calls),
    )
    try:
        result = await guard.post(f"http://rebind.example.test:{receiver.port}/x", b"hi", {})
    finally:
        await guard.aclose()
    assert result.status == 204
    assert calls == ["rebind.example.test"]
    assert f"Host: rebind.example.test:{receiver.port}".encode() in receiver.requests[0]


async def test_the_system_resolver_reads_etc_hosts() -> None:
    answers = await system_resolver("localhost", 443)
    assert any(address.is_loopback for address in answers)


async def test_redirects_are_reported_not_followed(receiver: Receiver) -> None:
    receiver.answer = (
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    guard = OutboundGuard(allow_http=True, allow_networks=LOOPBACK)
    try:
        result = await guard.post(f"http://127.0.0.1:{receiver.port}/", b"{}", {})
    finally:
        await guard.aclose()
    assert result.status == 302
    assert result.error == "redirect (302) not followed"
    assert not result.ok
    assert len(receiver.requests) == 1


async def test_a_huge_response_is_cut_at_the_cap(receiver: Receiver) -> None:
    size = 5 * 1024 * 1024
    receiver.answer = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    guard = OutboundGuard(allow_http=True, allow_networks=LOOPBACK, max_response_bytes=100)
    try:
        result = await guard.post(f"http://127.0.0.1:{receiver.port}/", b"{}", {})
    finally:
        await guard.aclose()
    assert result.status == 500
    assert result.error == "HTTP 500"
    assert result.body == b"x" * 100


async def test_a_silent_receiver_times_out(receiver: Receiver) -> None:
    receiver.stall = True
    guard = OutboundGuard(allow_http=True, allow_networks=LOOPBACK)
    try:
        result = await guard.post(f"http://127.0.0.1:{receiver.port}/", b"{}", {}, timeout=0.5)
    finally:
        await guard.aclose()
    assert result.status is None
    assert result.error == "timed out after 0.5 s"


async def test_a_closed_port_is_a_connection_error() -> None:
    from tests.conftest import free_port

    guard = OutboundGuard(allow_http=True, allow_networks=LOOPBACK)
    result = await guard.post(f"http://127.0.0.1:{free_port()}/", b"{}", {})
    await guard.aclose()
    assert result.status is None
    assert result.error is not None
    assert result.error.startswith("ConnectError")


async def test_a_refused_url_is_reported_not_raised() -> None:
    result = await OutboundGuard().post("http://example.com/", b"{}", {})
    assert result.error is not None
    assert "must use https" in result.error


# --- TLS: the name stays the name ------------------------------------------------------------


def _tls_contexts(workdir: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name``: the server's context and a client trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
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
    return server, ssl.create_default_context(cafile=str(cert_file))


async def test_https_connects_to_the_checked_address_with_sni_and_certificate_of_the_name(
    tmp_path: Path,
) -> None:
    server_context, client_context = _tls_contexts(tmp_path, "hooks.example.test")
    state = Receiver()
    names: list[str | None] = []

    def remember_sni(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    server_context.sni_callback = remember_sni  # type: ignore[assignment]
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    guard = OutboundGuard(
        allow_networks=LOOPBACK,
        resolver=fixed_resolver("127.0.0.1"),
        ssl_context=client_context,
    )
    try:
        good = await guard.post(f"https://hooks.example.test:{port}/in", b"{}", {})
        # Same address, another name: the certificate does not match it, so no delivery.
        wrong = await guard.post(f"https://other.example.test:{port}/in", b"{}", {})
    finally:
        await guard.aclose()
        server.close()
    assert (good.status, good.error) == (204, None)
    assert names[0] == "hooks.example.test"
    assert f"Host: hooks.example.test:{port}".encode() in state.requests[0]
    assert wrong.status is None and wrong.error is not None
    assert len(state.requests) == 1
