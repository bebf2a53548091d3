"""The one-pass read of the caller's headers gives what ``request.headers.get`` gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from keyplane.api.deps import _principal_headers

_NAMES = st.sampled_from(
    [b"authorization", b"x-forwarded-for", b"x-real-ip", b"user-agent", b"host", b"x-other"]
)
_VALUES = st.binary(max_size=24)


@given(headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=12))
def test_each_header_is_the_first_of_its_name_as_starlette_reads_it(
    headers: list[tuple[bytes, bytes]],
) -> None:
    scope = {"type": "http", "headers": headers}
    reference = Headers(scope=scope)
    names = ("authorization", "x-forwarded-for", "x-real-ip", "user-agent")
    assert _principal_headers(scope) == [reference.get(name) for name in names]
