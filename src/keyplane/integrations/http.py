"""Gateway requests and answers over HTTP: where the key and context are read from, and which
status and headers each verify code becomes.

Shared by ``/v1/auth`` (nginx ``auth_request``, Traefik ForwardAuth, Envoy ext_authz), the ASGI
middleware and the FastAPI dependency, so all of them answer a refusal the same way.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from keyplane.domain import money, request_signing
from keyplane.domain.forwarding import client_address, is_trusted
from keyplane.domain.network import IpNetwork, parse_ip
from keyplane.integrations.decision import AuthRequest, Decision, Limit

#: Request headers a gateway (not the client: see docs/gateway.md) may set to describe the call.
MODEL_HEADER = "x-keyplane-model"
SCOPES_HEADER = "x-keyplane-scopes"
COST_HEADER = "x-keyplane-cost"
REQUEST_ID_HEADER = "x-keyplane-request-id"
INPUT_TOKENS_HEADER = "x-keyplane-input-tokens"
OUTPUT_TOKENS_HEADER = "x-keyplane-output-tokens"
FEATURES_HEADER = "x-keyplane-features"
OPERATION_HEADER = "x-keyplane-operation"
PROVIDER_HEADER = "x-keyplane-provider"
AUTO_ROUTING_HEADER = "x-keyplane-auto-routing"
FALLBACK_HEADER = "x-keyplane-fallback"
#: Feature, operation and provider names (the policy's ``NAME_PATTERN``), and how many.
_NAME = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
MAX_FEATURES = 32

#: Headers the client sends with a signed request (docs/signing.md).
SIGNATURE_HEADER = "x-keyplane-signature"
TIMESTAMP_HEADER = "x-keyplane-timestamp"
NONCE_HEADER = "x-keyplane-nonce"
CONTENT_SHA256_HEADER = "x-keyplane-content-sha256"
#: Where gateways put the original request line in a forward-auth subrequest: Traefik sets
#: X-Forwarded-Method/-Uri itself, nginx gets X-Original-Method/-URI from its config; Envoy
#: (no such headers) sends the original method and the path under the auth prefix.
ORIGINAL_METHOD_HEADERS = ("x-forwarded-method", "x-original-method")
ORIGINAL_URI_HEADERS = ("x-forwarded-uri", "x-original-uri")
#: Longest request target (path and query) read for signing.
MAX_URI_LENGTH = 8192

#: Upper bounds on what is read from headers; more is refused, never truncated.
MAX_KEY_LENGTH = 4096
MAX_MODEL_LENGTH = 128
MAX_CONTEXT_LENGTH = 2048
MAX_SCOPES = 64
MAX_SCOPE_LENGTH = 128
MAX_REQUEST_ID_LENGTH = 255
#: The same bound as the token estimate of POST /v1/verify.
MAX_TOKENS = 10**9

_UNAUTHENTICATED = frozenset({"MALFORMED", "NOT_FOUND", "DISABLED", "EXPIRED", "REVOKED"})
_FORBIDDEN = frozenset(
    {
        "INSUFFICIENT_SCOPE",
        "FORBIDDEN_MODEL",
        "IP_NOT_ALLOWED",
        "ORIGIN_NOT_ALLOWED",
        "USER_AGENT_NOT_ALLOWED",
        "HTTPS_REQUIRED",
        "COUNTRY_NOT_ALLOWED",
        "DOMAIN_NOT_ALLOWED",
        "FEATURE_NOT_ALLOWED",
        "OPERATION_NOT_ALLOWED",
        "PROVIDER_NOT_ALLOWED",
        "PENDING_APPROVAL",
    }
)
#: A signature that does not check out is a failed authentication of the request.
_UNSIGNED = frozenset({"SIGNATURE_INVALID", "TIMESTAMP_EXPIRED", "NONCE_REUSED"})
_LIMITED = frozenset({"RATE_LIMITED", "TOKEN_LIMITED", "CONCURRENCY_EXCEEDED"})

_DETAILS = {
    "MISSING_KEY": "no API key was presented",
    "MALFORMED": "the API key is malformed",
    "NOT_FOUND": "the API key is not valid",
    "DISABLED": "the API key is disabled",
    "EXPIRED": "the API key has expired",
    "REVOKED": "the API key has been revoked",
    "INSUFFICIENT_SCOPE": "the API key lacks a scope this request needs",
    "FORBIDDEN_MODEL": "the API key may not use this model",
    "IP_NOT_ALLOWED": "the API key may not be used from this address",
    "ORIGIN_NOT_ALLOWED": "the API key may not be used from this origin",
    "USER_AGENT_NOT_ALLOWED": "the API key may not be used by this client",
    "HTTPS_REQUIRED": "the API key may only be used over HTTPS",
    "COUNTRY_NOT_ALLOWED": "the API key may not be used from this country",
    "DOMAIN_NOT_ALLOWED": "the API key may not be used from this domain",
    "SIGNATURE_INVALID": "the request's signature is missing or does not match",
    "TIMESTAMP_EXPIRED": "the request's signed timestamp is too far from now",
    "NONCE_REUSED": "the request's nonce was already used",
    "FEATURE_NOT_ALLOWED": "the API key may not use this feature",
    "OPERATION_NOT_ALLOWED": "the API key may not perform this operation",
    "PROVIDER_NOT_ALLOWED": "the API key may not be routed to this provider",
    "PENDING_APPROVAL": "the API key awaits approval",
    "RATE_LIMITED": "the API key's rate limit is exhausted; retry later",
    "TOKEN_LIMITED": "the API key's token limit is exhausted; retry later",
    "CONCURRENCY_EXCEEDED": "the API key has too many requests in flight",
    "BUDGET_EXCEEDED": "the API key's budget is exhausted",
    "COST_LIMITED": "the API key's cost limit does not allow this request",
    "AUTH_UNAVAILABLE": "the API key could not be checked now; retry later",
}


class BadGatewayHeader(ValueError):
    """A describing header (``X-Keyplane-*``) is unusable; the message names it, not its value."""


def status_for(code: str) -> int:
    """The HTTP status a verify code becomes at a gateway."""
    if code == "VALID":
        return 200
    if code in _UNAUTHENTICATED or code in _UNSIGNED or code == "MISSING_KEY":
        return 401
    if code in _FORBIDDEN:
        return 403
    if code in _LIMITED:
        return 429
    if code in ("BUDGET_EXCEEDED", "COST_LIMITED"):
        return 402
    if code == "AUTH_UNAVAILABLE":
        return 503  # the verifier could not answer: refuse, but say it is not the key's fault
    return 403  # an unknown refusal is still a refusal: fail closed


def detail_for(code: str) -> str:
    return _DETAILS.get(code, "the API key may not be used for this request")


def read_key(headers: Mapping[str, str], header: str = "Authorization") -> str | None:
    """The presented API key, or ``None`` when there is none.

    From ``Authorization`` only a ``Bearer`` credential counts; any other header holds the bare
    key. Oversized values are treated as absent-but-wrong by the caller (they fail to parse).
    """
    value = headers.get(header.lower())
    if value is None:
        return None
    if header.lower() == "authorization":
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None
        value = token
    value = value.strip()
    return value or None


def read_client(
    headers: Mapping[str, str],
    peer: str | None,
    trusted: Sequence[IpNetwork],
    scheme: str | None = None,
    country_header: str | None = None,
) -> AuthRequest:
    """What the client itself tells about the request: its address, origin, referrer, agent.

    Right for a service the client reaches directly: nothing here lets the client choose
    scopes, model or cost. ``scheme`` is the connection's own (``None`` when the connection
    is a gateway's, not the client's); a trusted proxy's ``X-Forwarded-Proto`` and country
    header (``country_header``, e.g. ``CF-IPCountry``) replace it, nobody else's are read.
    """
    from_proxy = is_trusted(parse_ip(peer) if peer else None, trusted)
    return AuthRequest(
        ip=client_address(peer, headers.get("x-forwarded-for"), headers.get("x-real-ip"), trusted),
        origin=_context(headers.get("origin")),
        referrer=_context(headers.get("referer")),
        user_agent=_context(headers.get("user-agent")),
        scheme=_forwarded_scheme(headers.get("x-forwarded-proto")) if from_proxy else scheme,
        country=(
            _country(headers.get(country_header.lower())) if from_proxy and country_header else None
        ),
    )


def _forwarded_scheme(value: str | None) -> str | None:
    # The last hop's entry is the one our trusted proxy wrote ("https" or "https, http").
    if value is None:
        return None
    last = value.rsplit(",", 1)[-1].strip().lower()
    return last if last in ("http", "https") else None


def _country(value: str | None) -> str | None:
    # Cloudflare writes "XX" for unknown and "T1" for Tor: both are codes a rule can name.
    if value is None:
        return None
    value = value.strip()
    if len(value) != 2 or not value.isascii() or not value.isalnum():
        return None
    return value.upper()


def read_signed(
    headers: Mapping[str, str], method: str, target: str
) -> request_signing.SignedRequest | None:
    """The signing parts of a request whose original ``method`` and ``target`` (path and
    query) are known; ``None`` when it carries no signature or malformed parts."""
    signature = headers.get(SIGNATURE_HEADER)
    if signature is None or len(target) > MAX_URI_LENGTH:
        return None
    path, _, query = target.partition("?")
    return request_signing.signed_request(
        signature.strip(),
        method,
        path,
        query,
        _stripped(headers.get(TIMESTAMP_HEADER)),
        _stripped(headers.get(NONCE_HEADER)),
        _stripped(headers.get(CONTENT_SHA256_HEADER)),
    )


def _stripped(value: str | None) -> str | None:
    return None if value is None else value.strip()


def original_request_line(headers: Mapping[str, str], method: str, target: str) -> tuple[str, str]:
    """The client's method and target in a forward-auth subrequest (see the header names)."""
    for name in ORIGINAL_METHOD_HEADERS:
        if headers.get(name):
            method = headers[name].strip()
            break
    for name in ORIGINAL_URI_HEADERS:
        if headers.get(name):
            target = headers[name].strip()
            break
    return method, target


def read_request(
    headers: Mapping[str, str],
    peer: str | None,
    trusted: Sequence[IpNetwork],
    country_header: str | None = None,
    request_line: tuple[str, str] | None = None,
) -> AuthRequest:
    """The client's context plus what the gateway describes in ``X-Keyplane-*`` headers.

    Only for forward auth, where the gateway (not the client) controls those headers.
    ``request_line`` is the client's (method, target) when known, for signed requests.

    Raises:
        BadGatewayHeader: an ``X-Keyplane-*`` header is oversized or not well formed.
    """
    signed = None if request_line is None else read_signed(headers, *request_line)
    return dataclasses.replace(
        read_client(headers, peer, trusted, None, country_header),
        signed=signed,
        model=_bounded(headers, MODEL_HEADER, MAX_MODEL_LENGTH),
        scopes=_scopes(headers.get(SCOPES_HEADER)),
        cost=_cost(headers.get(COST_HEADER)),
        tokens_in=_tokens(headers.get(INPUT_TOKENS_HEADER), INPUT_TOKENS_HEADER),
        tokens_out=_tokens(headers.get(OUTPUT_TOKENS_HEADER), OUTPUT_TOKENS_HEADER),
        request_id=_request_id(headers.get(REQUEST_ID_HEADER)),
        features=_features(headers.get(FEATURES_HEADER)),
        operation=_name(headers.get(OPERATION_HEADER), OPERATION_HEADER),
        provider=_name(headers.get(PROVIDER_HEADER), PROVIDER_HEADER),
        auto_routing=_flag(headers.get(AUTO_ROUTING_HEADER), AUTO_ROUTING_HEADER),
        fallback=_flag(headers.get(FALLBACK_HEADER), FALLBACK_HEADER),
    )


def _features(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if len(value) > MAX_FEATURES * 65:
        raise BadGatewayHeader(f"{FEATURES_HEADER} takes at most {MAX_FEATURES} features")
    names = tuple(part for part in value.replace(",", " ").split() if part)
    if len(names) > MAX_FEATURES or not all(_NAME.fullmatch(name) for name in names):
        raise BadGatewayHeader(
            f"{FEATURES_HEADER} takes at most {MAX_FEATURES} lowercase names of 64 characters"
        )
    return names


def _name(value: str | None, header: str) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > 64 or not _NAME.fullmatch(value):
        raise BadGatewayHeader(f"{header} must be a lowercase name of at most 64 characters")
    return value


def _flag(value: str | None, header: str) -> bool:
    if value is None or not value.strip():
        return False
    text = value.strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise BadGatewayHeader(f"{header} must be true or false")
    return text in ("true", "1")


def _bounded(headers: Mapping[str, str], name: str, limit: int) -> str | None:
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > limit or not value.isprintable():
        raise BadGatewayHeader(f"{name} must be at most {limit} printable characters")
    return value


def _tokens(value: str | None, name: str) -> int:
    if value is None or not value.strip():
        return 0
    text = value.strip()
    # ASCII digits only: int() would also take "1_000", "+5" and non-ASCII digits.
    if len(text) > 10 or not (text.isascii() and text.isdigit()) or int(text) > MAX_TOKENS:
        raise BadGatewayHeader(f"{name} must be a whole number from 0 to {MAX_TOKENS}")
    return int(text)


def _request_id(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    # The same rule as the request_id of POST /v1/verify: visible ASCII, no spaces.
    if len(value) > MAX_REQUEST_ID_LENGTH or not all("!" <= char <= "~" for char in value):
        raise BadGatewayHeader(
            f"{REQUEST_ID_HEADER} must be 1-{MAX_REQUEST_ID_LENGTH} visible ASCII characters"
        )
    return value


def _context(value: str | None) -> str | None:
    # Origin, Referer and User-Agent come from the client: an oversized one is simply not
    # matched against any rule (the key's network policy then refuses it if it has one).
    if value is None or len(value) > MAX_CONTEXT_LENGTH:
        return None
    return value


def _scopes(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    scopes = tuple(part for part in value.replace(",", " ").split() if part)
    if len(scopes) > MAX_SCOPES or any(
        len(scope) > MAX_SCOPE_LENGTH or not scope.isprintable() for scope in scopes
    ):
        raise BadGatewayHeader(
            f"{SCOPES_HEADER} takes at most {MAX_SCOPES} scopes of {MAX_SCOPE_LENGTH} characters"
        )
    return scopes


def _cost(value: str | None) -> Decimal | None:
    if value is None or not value.strip():
        return None
    message = f"{COST_HEADER} must be a non-negative number of credits (at most 6 decimals)"
    try:
        # The bounded parser: "9e999992" here once held the event loop for 37 s.
        micros = money.to_micros(value.strip())
    except ValueError:
        raise BadGatewayHeader(message) from None
    if micros < 0:
        raise BadGatewayHeader(message)
    return money.to_decimal(micros)


def header_value(text: str) -> str:
    """``text`` made safe for a response header: printable ASCII, others percent-encoded.

    Owners and plan names are free text; a raw newline would split the header and a non-Latin-1
    character would fail to encode, so neither may reach the wire as is.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        char if char.isascii() and char.isprintable() and char != "%" else _percent(char)
        for char in text
    )


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _tightest(limits: Sequence[Limit]) -> Limit | None:
    """The limit a client should pace itself by: the fewest remaining, then the latest reset."""
    counted = [limit for limit in limits if limit.kind != "budget"]
    if not counted:
        return None
    return min(
        counted,
        key=lambda limit: (
            limit.remaining,
            -(limit.reset_at.timestamp() if limit.reset_at else 0.0),
        ),
    )


def _whole(value: float) -> str:
    # Header numbers are non-negative integers; round up so a client never retries early.
    return str(max(0, math.ceil(value)))


def ratelimit_headers(decision: Decision, now: datetime) -> dict[str, str]:
    """Only the ``RateLimit-*`` headers, for a service to add to its own allowed responses."""
    return {
        name: value
        for name, value in response_headers(decision, now).items()
        if name.startswith("RateLimit-")
    }


def response_headers(decision: Decision, now: datetime) -> dict[str, str]:
    """Headers for a gateway answer: who the key is on success, why and when on refusal.

    ``RateLimit-Limit``/``-Remaining``/``-Reset`` follow the IETF draft
    (draft-ietf-httpapi-ratelimit-headers): the reset is seconds from now, not a timestamp.
    """
    headers = {"X-Keyplane-Code": decision.code}
    for name, value in (
        ("X-Keyplane-Key-Id", decision.key_id),
        ("X-Keyplane-Owner", decision.owner),
        ("X-Keyplane-Plan", decision.plan),
        ("X-Keyplane-Request-Id", decision.request_id),
    ):
        if value:
            headers[name] = header_value(value)
    if decision.directives:
        headers.update(directive_headers(decision.directives))
    if decision.rotation_pending:
        headers["X-Keyplane-Rotation-Pending"] = "true"
    limit = _tightest(decision.limits)
    if limit is not None:
        headers["RateLimit-Limit"] = _whole(limit.limit)
        headers["RateLimit-Remaining"] = _whole(limit.remaining)
        if limit.reset_at is not None:
            reset = (limit.reset_at - now).total_seconds()
        else:
            reset = decision.retry_after or 0.0
        headers["RateLimit-Reset"] = _whole(reset)
    status = status_for(decision.code)
    if status == 429:
        # Retry-After is required on 429; one second when the limiter cannot say.
        headers["Retry-After"] = _whole(max(decision.retry_after or 1.0, 1.0))
    if status == 401:
        error = "invalid_request" if decision.code == "MISSING_KEY" else "invalid_token"
        headers["WWW-Authenticate"] = f'Bearer realm="keyplane", error="{error}"'
    return headers


def directive_headers(directives: Mapping[str, Any]) -> dict[str, str]:
    """The verdict's directives as response headers a gateway can copy or act on.

    ``data_access`` and ``routing`` rules become one header each (``X-Keyplane-Log-Responses:
    false``, ``X-Keyplane-Allowed-Providers: openai, anthropic``); ``advanced_features`` one
    ``X-Keyplane-Advanced-Features: batch_processing=true, priority_queue=false``.
    """
    headers: dict[str, str] = {}
    for section in ("data_access", "routing"):
        for name, value in directives.get(section, {}).items():
            if value is None:
                continue  # e.g. no forced provider: nothing for the gateway to do
            header = "X-Keyplane-" + "-".join(part.title() for part in name.split("_"))
            headers[header] = _directive_value(value)
    flags = directives.get("advanced_features")
    if flags:
        headers["X-Keyplane-Advanced-Features"] = ", ".join(
            f"{name}={_directive_value(on)}" for name, on in flags.items()
        )
    return headers


def _directive_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def problem_body(decision: Decision) -> dict[str, Any]:
    """The problem+json (RFC 9457) body of a refusal; never contains the key."""
    status = status_for(decision.code)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": decision.code,
        "detail": detail_for(decision.code),
    }
    if decision.request_id:
        body["request_id"] = decision.request_id
    if decision.retry_after is not None and status == 429:
        body["retry_after"] = decision.retry_after
    return body


MISSING_KEY = Decision("MISSING_KEY")
