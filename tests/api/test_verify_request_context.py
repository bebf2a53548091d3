"""The verify body's shortcuts agree with the body read field by field, for any body: the
default request context for a body without context fields, and the plain request for a body
of one key."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from keyplane.api.routes.verify import (
    _NO_CONTEXT,
    CONTEXT_FIELDS,
    built_context,
    plain_request,
    request_context,
    service_request,
)
from keyplane.api.schemas import VerifyRequest
from keyplane.services import verify as service

KEY = "kp_live_" + "a" * 36
NAMES = st.sampled_from(["chat_completion", "vision", "read", "export_data", "openai"])

#: A valid value for every optional field of the verify body.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "scopes": st.lists(st.sampled_from(["keys:read", "verify", "chat"]), max_size=3),
    "request_id": st.sampled_from(["req-1", "abc.def"]),
    "model": st.none() | st.sampled_from(["gpt-4o", "claude-3"]),
    "ip": st.none() | st.sampled_from(["10.0.0.1", "2001:db8::1"]),
    "origin": st.none() | st.sampled_from(["https://a.example", ""]),
    "referrer": st.none() | st.just("https://b.example/page"),
    "user_agent": st.none() | st.just("curl/8"),
    "cost": st.none() | st.sampled_from([0, 1, "0.5"]),
    "tokens": st.none() | st.just({"input": 3, "output": 4}),
    "acquire_concurrency": st.booleans(),
    "scheme": st.none() | st.sampled_from(["http", "https"]),
    "country": st.none() | st.sampled_from(["de", "US"]),
    "signature": st.none()
    | st.just(
        {"signature": "0" * 64, "method": "POST", "path": "/x", "timestamp": "1", "nonce": "n" * 16}
    ),
    "feature": st.none() | NAMES,
    "features": st.lists(NAMES, max_size=3),
    "operation": st.none() | NAMES,
    "provider": st.none() | NAMES,
    "auto_routing": st.booleans(),
    "fallback": st.booleans(),
    "wait_ms": st.integers(0, 1000),
}


def test_the_strategy_covers_every_field() -> None:
    assert set(FIELD_VALUES) == set(VerifyRequest.model_fields) - {"key"}


@st.composite
def bodies(draw: st.DrawFn) -> VerifyRequest:
    chosen = draw(st.sets(st.sampled_from(sorted(FIELD_VALUES))))
    document = {"key": KEY} | {name: draw(FIELD_VALUES[name]) for name in chosen}
    return VerifyRequest.model_validate(document)


@settings(max_examples=300)
@given(bodies())
def test_request_context_agrees_with_the_context_read_field_by_field(body: VerifyRequest) -> None:
    assert request_context(body) == built_context(body)


def test_only_a_body_without_context_fields_takes_the_shortcut() -> None:
    assert request_context(VerifyRequest(key=KEY, scopes=("verify",), cost=1)) is _NO_CONTEXT
    for name in ("auto_routing", "fallback"):
        # Given at its default value, a context field still counts as given.
        body = VerifyRequest.model_validate({"key": KEY, name: False})
        assert request_context(body) == built_context(body)
    assert "model" in CONTEXT_FIELDS and "key" not in CONTEXT_FIELDS


def test_list_fields_are_tuples_whether_given_or_defaulted() -> None:
    document = {"key": KEY, "scopes": ["verify"], "features": ["vision"]}
    given_ = VerifyRequest.model_validate(document)
    defaulted = VerifyRequest.model_validate({"key": KEY})
    assert (given_.scopes, given_.features) == (("verify",), ("vision",))
    assert (defaulted.scopes, defaulted.features) == ((), ())


_KEY_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), min_size=4090, max_size=4100),
    st.sampled_from(["\ud800", "kp_live_" + "é" * 36, "", " kp_live_x "]),
)
_OTHER = st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2))


@settings(max_examples=300)
@given(
    document=st.one_of(
        st.fixed_dictionaries({"key": _KEY_TEXT}),
        st.fixed_dictionaries({"key": _OTHER}),
        st.dictionaries(st.sampled_from(["key", "scopes", "model", "extra"]), _KEY_TEXT),
        st.lists(_KEY_TEXT, max_size=2),
        _KEY_TEXT,
    )
)
def test_plain_request_asks_what_the_validated_body_asks(document: Any) -> None:
    plain = plain_request(document)
    try:
        reference = service_request(VerifyRequest.model_validate(document))
    except ValidationError:
        reference = None
    if plain is not None:
        assert plain == reference
    # Every body of one ASCII key the model takes goes the short way.
    if isinstance(document, dict) and set(document) == {"key"} and reference is not None:
        assert plain is not None or not document["key"].isascii()


def test_plain_request_takes_only_a_body_of_one_key() -> None:
    assert plain_request({"key": KEY}) == service.VerifyRequest(KEY)
    assert plain_request({"key": KEY, "scopes": []}) is None
    assert plain_request({"key": "x" * 4097}) is None
    assert plain_request({"key": "kp_live_é"}) is None  # the model's to judge
