"""``verdict_json`` writes, byte for byte, what the verify route wrote before it: the
``verdict_body`` dictionary through ``json.dumps`` inside the exact-credits marking
(``api/exact.py``), its credit markers then swapped for bare numbers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.responses import Response

from keyplane.api import verdict_json as module
from keyplane.api.exact import exactly
from keyplane.api.routes.verify import verdict_body
from keyplane.api.verdict_json import verdict_json
from keyplane.domain.admission import Dimension, LimitState
from keyplane.domain.decisions import Code
from keyplane.domain.keys import Environment, KeyRecord
from keyplane.services.verify import Verdict

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

text = st.text(max_size=12)  # any characters: quotes, backslashes, controls, non-ASCII
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
times = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)
micros = st.integers(-(10**18), 10**18)


@st.composite
def records(draw: st.DrawFn) -> KeyRecord:
    return KeyRecord(
        id="key_" + draw(st.text("0123456789abcdefghjk", min_size=1, max_size=26)),
        org_id="org_1",
        project_id="prj_1",
        hash="h",
        start="kp_live_",
        end="abcd",
        name=draw(text),
        environment=draw(st.sampled_from(list(Environment))),
        created_at=CREATED,
        updated_at=CREATED,
        owner=draw(st.none() | text),
        tags=tuple(draw(st.lists(text, max_size=3))),
        metadata=draw(st.dictionaries(text, json_values, max_size=4)),
        expires_at=draw(times),
    )


@st.composite
def limits(draw: st.DrawFn) -> LimitState:
    kind = draw(st.sampled_from(list(Dimension)))
    budget = kind is Dimension.BUDGET
    return LimitState(
        draw(text),
        kind,
        draw(micros if budget else st.integers(0, 10**15)),
        draw(micros if budget else st.integers(-5, 10**15)),
        draw(times),
        draw(st.none() | micros) if budget else None,
    )


def reference(verdict: Verdict) -> bytes:
    """The route's answer before: ``verdict_body`` marked, dumped and unmarked."""

    async def answer() -> Response:
        return Response(json.dumps(verdict_body(verdict)), media_type="application/json")

    return bytes(asyncio.run(exactly(answer())).body)


@given(
    st.lists(records(), min_size=1, max_size=3),
    st.lists(
        st.tuples(
            st.integers(0, 2),  # which record (reused: the cache must hold up)
            st.sampled_from(list(Code)),
            st.lists(limits(), max_size=4),
            st.none() | st.floats(0, 10**6),
            st.tuples(*[st.lists(text, max_size=2)] * 2),  # two choices of scopes
            st.none() | text,  # plan
            st.none() | text,  # request id
            st.dictionaries(text, json_values, max_size=3),  # directives
            st.booleans(),
            st.booleans(),
        ),
        max_size=6,
    ),
)
@settings(max_examples=200, deadline=None)
def test_verdict_json_is_the_reference_byte_for_byte(
    key_records: list[KeyRecord], calls: list[tuple]
) -> None:
    # Small: the caches empty and refill along the way.
    module._KEY_PARTS.max_entries = module._DIRECTIVES.max_entries = 2
    try:
        for which, code, states, retry, scopes, plan, rid, directives, pick, pending in calls:
            record = key_records[which % len(key_records)]
            verdict = Verdict(
                code,
                record,
                plan,
                rid,
                tuple(states),
                retry,
                tuple(scopes[pick]),
                directives,
                pending,
            )
            assert verdict_json(verdict) == reference(verdict)
    finally:
        module._KEY_PARTS.max_entries = module._DIRECTIVES.max_entries = 4096


def test_a_verdict_without_a_key_is_the_reference() -> None:
    for code in (Code.MALFORMED, Code.NOT_FOUND):
        verdict = Verdict(code)
        assert verdict_json(verdict) == reference(verdict)


def test_a_reloaded_key_is_written_afresh() -> None:
    """A changed key is a new record: its part is never the old record's, even when the old
    one's id is reused by the new object."""
    first = KeyRecord(
        "key_1", "org_1", "prj_1", "h", "s", "e", "before", Environment.LIVE, CREATED, CREATED
    )
    verdict = Verdict(Code.VALID, first, None, "req_1", scopes=("a",))
    assert b'"name": "before"' in verdict_json(verdict)
    second = KeyRecord(
        "key_1", "org_1", "prj_1", "h", "s", "e", "after", Environment.LIVE, CREATED, CREATED
    )
    again = Verdict(Code.VALID, second, None, "req_2", scopes=("a",))
    assert b'"name": "after"' in verdict_json(again)
    assert verdict_json(again) == reference(again)
    # And the same record with other scopes or another plan is written with those.
    other = Verdict(Code.VALID, second, "pro", "req_3", scopes=("b",))
    assert verdict_json(other) == reference(other)
