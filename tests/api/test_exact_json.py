"""The exact-JSON helpers against what they replace: ``json.loads`` with ``JsonNumber``, and
credit markers that differ for every request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import Response
from hypothesis import given
from hypothesis import strategies as st

from keyplane.api import exact
from keyplane.api.exact import JsonNumber, credits, exactly, loads_exact

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _same(left: Any, right: Any) -> bool:
    """Equal, and every float of one a JsonNumber with the other's text."""
    if isinstance(left, JsonNumber) or isinstance(right, JsonNumber):
        both = isinstance(left, JsonNumber) and isinstance(right, JsonNumber)
        return both and left.text == right.text
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same, left, right))
    return type(left) is type(right) and left == right


def _outcome(text: str | bytes) -> tuple[str, Any]:
    try:
        return "ok", json.loads(text, parse_float=JsonNumber)
    except ValueError as exc:
        return "error", type(exc)


def _ours(text: str | bytes) -> tuple[str, Any]:
    try:
        return "ok", loads_exact(text)
    except ValueError as exc:
        return "error", type(exc)


@given(value=JSON_VALUES, encoding=st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-8-sig"]))
def test_loads_exact_decodes_what_json_loads_decodes(value: Any, encoding: str) -> None:
    text = json.dumps(value)
    for given_text in (text, text.encode(encoding)):
        expected, got = _outcome(given_text), _ours(given_text)
        assert expected[0] == got[0] == "ok"
        assert _same(expected[1], got[1])


@given(text=st.text(max_size=40) | st.sampled_from(["\ufeff{}", "1.50", "[1e5, -0.0]", "{"]))
def test_loads_exact_fails_where_json_loads_fails(text: str) -> None:
    for given_text in (text, text.encode("utf-8", "surrogatepass")):
        expected, got = _outcome(given_text), _ours(given_text)
        assert expected[0] == got[0]
        if expected[0] == "ok":
            assert _same(expected[1], got[1])
        else:
            assert expected[1] is got[1]


async def test_every_answer_gets_a_mark_of_its_own_that_no_client_can_know() -> None:
    seen: list[bytes] = []

    async def answer() -> Response:
        body = json.dumps({"credits": credits(12_500_000)}).encode()
        seen.append(body)
        return Response(body, media_type="application/json")

    first, second = await exactly(answer()), await exactly(answer())
    assert first.body == second.body == b'{"credits": 12.5}'
    marks = [exact._MARKED.search(body) for body in seen]
    assert all(mark is not None for mark in marks)
    assert marks[0] is not None and marks[1] is not None
    assert marks[0][1] != marks[1][1]  # fresh for every request


@pytest.mark.parametrize("stale", [True, False])
async def test_a_mark_from_another_answer_is_left_as_text(stale: bool) -> None:
    # A marker-shaped string a client stored (or an earlier answer's mark) is not this
    # answer's mark, so it stays a string.
    earlier: list[str] = []

    async def remember() -> Response:
        earlier.append(credits(1))
        return Response(b"{}")

    await exactly(remember())
    foreign = earlier[0] if stale else "kp-exact-" + "0" * 32 + ":1.0"

    async def answer() -> Response:
        return Response(json.dumps({"note": foreign, "credits": credits(1)}).encode())

    body = json.loads((await exactly(answer())).body)
    assert body == {"note": foreign, "credits": 0.000001}
