"""The data plane's one pass over a request's head reads each thing as its reference does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from keyplane.api.body_limit import content_length
from keyplane.api.deps import _principal_headers
from keyplane.api.header_limit import HeaderLimits, over_limits
from keyplane.api.observe import _inbound_id
from keyplane.api.request_head import JSON, RequestHead

_NAMES = st.sampled_from(
    [
        b"content-length",
        b"x-request-id",
        b"authorization",
        b"x-forwarded-for",
        b"x-real-ip",
        b"user-agent",
        b"content-type",
        b"transfer-encoding",
        b"idempotency-key",
        b"host",
        b"x-other",
    ]
)
_VALUES = st.one_of(
    st.binary(max_size=24),
    st.sampled_from(
        [JSON, b"text/plain", b"12", b"-3", b" 7 ", b"1e3", b"99999999999", b"0", b"chunked"]
    ),
)
_HEADERS = st.lists(st.tuples(_NAMES, _VALUES), max_size=12)


def _content_type_is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    # The check the data plane made before: any Content-Type but JSON is the route's to judge.
    return all(value == JSON for name, value in headers if name == b"content-type")


@given(
    headers=_HEADERS,
    path=st.binary(max_size=40),
    query=st.binary(max_size=40),
    max_count=st.integers(0, 14),
    max_bytes=st.integers(0, 400),
    max_body=st.integers(0, 100),
)
def test_the_head_reads_each_thing_as_its_reference(
    headers: list[tuple[bytes, bytes]],
    path: bytes,
    query: bytes,
    max_count: int,
    max_bytes: int,
    max_body: int,
) -> None:
    scope = {"type": "http", "headers": headers, "raw_path": path, "query_string": query}
    head = RequestHead(scope)
    assert head.content_length == content_length(scope)
    assert head.request_id == _inbound_id(headers)
    principal = [head.authorization, head.forwarded_for, head.real_ip, head.user_agent]
    assert principal == _principal_headers(scope)
    assert head.json == _content_type_is_json(headers)
    assert head.idempotency_key == Headers(scope=scope).get("idempotency-key")
    # RFC 9112 section 6.3: a request has a body only with Transfer-Encoding or a
    # Content-Length (other than 0).
    names = [name for name, _ in headers]
    declares = b"content-length" in names and content_length(scope) != 0
    assert head.bodiless == (b"transfer-encoding" not in names and not declares)
    limits = HeaderLimits(max_count, max_bytes)
    declared = content_length(scope)
    over = over_limits(scope, limits) or (declared is not None and declared > max_body)
    assert head.over(limits, max_body) == over
    # At the very edges of the limits as well, where an off-by-one would show.
    for edge in (head.size - 1, head.size, head.size + 1):
        for count in (head.count - 1, head.count):
            limits = HeaderLimits(count, edge)
            too_long = declared is not None and declared > max_body
            assert head.over(limits, max_body) == (over_limits(scope, limits) or too_long)


def test_a_head_without_target_or_headers_is_empty() -> None:
    head = RequestHead({"type": "http", "headers": []})
    assert (head.count, head.size, head.content_length, head.request_id) == (0, 0, None, None)
    assert head.json
