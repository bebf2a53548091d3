from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from keyplane.domain import globs

# Model names as they appear in the wild: letters, digits, and the separators providers use.
MODEL_TEXT = st.text(alphabet="abcXYZ019-./_:[]", max_size=30)
GLOB_TEXT = st.text(alphabet="ab*?-/", max_size=12)
SUBJECT_TEXT = st.text(alphabet="abAB-/", max_size=16)


def _reference(pattern: str, model: str) -> bool:
    """The obvious (backtracking) translation, as an oracle for small inputs."""
    body = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.fullmatch(body, model, re.ASCII | re.IGNORECASE | re.DOTALL) is not None


@pytest.mark.parametrize(
    ("pattern", "model", "expected"),
    [
        ("gpt-4*", "gpt-4o", True),
        ("gpt-4*", "gpt-4", True),
        ("gpt-4*", "gpt-3.5-turbo", False),
        ("gpt-4*", "xgpt-4o", False),
        ("dall-e-*", "dall-e-3", True),
        ("dall-e-*", "dall-e", False),
        ("anthropic/*", "anthropic/claude-3", True),
        ("anthropic/*", "anthropic", False),
        ("*-vision-*", "gpt-4-vision-preview", True),
        ("*-vision-*", "gpt-4-vision", False),
        ("gpt-?", "gpt-4", True),
        ("gpt-?", "gpt-4o", False),
        ("GPT-4*", "gpt-4o", True),
        ("gpt-4*", "GPT-4O", True),
        ("claude-[3]", "claude-[3]", True),
        ("claude-[3]", "claude-3", False),
        ("*", "", True),
        ("*", "anything/at-all", True),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "aXXcYYb", False),
        ("gpt.4", "gpt-4", False),
    ],
)
def test_model_matches(pattern: str, model: str, expected: bool) -> None:
    assert globs.model_matches(pattern, model) is expected


def test_case_folding_is_ascii_only() -> None:
    # U+212A KELVIN SIGN folds to "k" under Unicode rules; it must not pass for a "k".
    assert not globs.model_matches("k*", "\u212a-model")
    assert globs.model_matches("\u212a*", "\u212a-model")


def test_many_stars_against_a_long_name_is_fast() -> None:
    # A naive translation backtracks polynomially here; the compiled glob answers at once.
    assert not globs.model_matches("*a*a*a*a*a*a*a*a*b", "a" * 5000)


def test_any_model_matches() -> None:
    assert globs.any_model_matches(["claude-*", "gpt-4*"], "gpt-4o")
    assert not globs.any_model_matches(["claude-*", "gpt-4*"], "mistral-large")
    assert not globs.any_model_matches([], "gpt-4o")


@given(MODEL_TEXT)
def test_a_literal_pattern_matches_exactly_itself_ignoring_case(model: str) -> None:
    assert globs.model_matches(model, model)
    assert globs.model_matches(model.upper(), model.lower())
    assert not globs.model_matches(model, model + "x")
    assert not globs.model_matches(model + "x", model)


@given(MODEL_TEXT, MODEL_TEXT)
def test_prefix_star_matches_every_extension(prefix: str, rest: str) -> None:
    assert globs.model_matches(prefix + "*", prefix + rest)


@given(GLOB_TEXT, SUBJECT_TEXT)
def test_globs_agree_with_the_naive_regex_translation(pattern: str, model: str) -> None:
    assert globs.model_matches(pattern, model) is _reference(pattern, model)


@pytest.mark.parametrize("pattern", ["gpt-4*", "*", "anthropic/*", "a" * 128, "[x]?"])
def test_valid_model_patterns_are_returned(pattern: str) -> None:
    assert globs.check_model_pattern(pattern) == pattern


@pytest.mark.parametrize("pattern", ["", "a" * 129, "gpt 4", "gpt-4\n", "gpt\t4", "modèle"])
def test_invalid_model_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="model patterns"):
        globs.check_model_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "url"),
    [
        ("https://*.example.com", "https://a.example.com"),
        ("https://*.example.com", "https://a.b.example.com"),
        ("https://*.example.com", "https://a.example.com/any/path?q=1#frag"),
        ("https://*.example.com", "HTTPS://A.EXAMPLE.COM"),
        ("https://*.example.com", "https://a.example.com:443"),
        ("https://app.example.com", "https://app.example.com"),
        ("https://app.example.com", "https://app.example.com/"),
        ("https://APP.example.com", "https://app.EXAMPLE.com/x"),
        ("*.example.com", "http://a.example.com"),
        ("*.example.com", "https://a.example.com"),
        ("app.example.com", "https://app.example.com/page"),
        ("https://app.example.com/*", "https://app.example.com/docs/page"),
        ("https://app.example.com/*", "https://app.example.com"),
        ("https://app.example.com/docs/*", "https://app.example.com/docs/a/b?x=1"),
        ("https://app.example.com/docs/*.html", "https://app.example.com/docs/a/b.html"),
        ("https://localhost:3000", "https://localhost:3000"),
        ("http://localhost:3000", "http://localhost:3000/callback"),
        ("localhost:3000", "http://localhost:3000"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("http://[::1]:8080", "http://[0:0::1]:8080"),
        ("https://app.example.com/", "https://app.example.com/anything"),
    ],
)
def test_url_matches(pattern: str, url: str) -> None:
    assert globs.check_url_pattern(pattern) == pattern
    assert globs.url_matches(pattern, url)


@pytest.mark.parametrize(
    ("pattern", "url"),
    [
        ("https://*.example.com", "https://example.com"),
        ("https://*.example.com", "https://evilexample.com"),
        ("https://*.example.com", "https://evil.com#.example.com"),
        ("https://*.example.com", "https://evil.com?.example.com"),
        ("https://*.example.com", "https://evil.com/.example.com"),
        ("https://*.example.com", "https://example.com.evil.com"),
        ("https://*.example.com", "https://evil.com\\.example.com"),
        ("https://*.example.com", "https://EVIL.COM#.EXAMPLE.COM"),
        ("https://*.example.com", "https://a.example.com."),
        ("https://*.example.com", "https://a..example.com"),
        ("https://*.example.com", "https://evil.com."),
        ("https://*.example.com", "https://a.example.com@evil.com"),
        ("https://*.example.com", "https://x@a.example.com"),
        ("https://*.example.com", "https://x:y@a.example.com"),
        ("https://*.example.com", "http://a.example.com"),
        ("https://*.example.com", "https://a.example.com:8443"),
        ("https://*.example.com", "https://a.example.com:"),
        ("https://*.example.com", "https://a.example.com:+443"),
        ("https://*.example.com", "https://a.example.com:99999"),
        ("https://*.example.com", "https://a.example.com:443.evil.com"),
        ("https://*.example.com", "https://a.exam ple.com"),
        ("https://*.example.com", "https://a.exam\tple.com"),
        ("https://*.example.com", " https://a.example.com"),
        ("https://*.example.com", "https://a.example.com%2f.evil.com"),
        ("https://*.example.com", "https://*.example.com"),
        ("https://*.example.com", "a.example.com"),
        ("https://*.example.com", "//a.example.com"),
        ("https://*.example.com", "ftp://a.example.com"),
        ("https://*.example.com", "javascript://a.example.com"),
        ("https://*.example.com", "https://b\u0430.example.com"),
        ("https://*.example.com", "https://a.example.com" + "/x" * 5000),
        ("https://*.example.com", ""),
        ("https://*.example.com", "not a url"),
        ("https://app.example.com", "https://app.example.com.evil.com"),
        ("https://app.example.com", "https://xapp.example.com"),
        ("*.example.com", "ws://a.example.com"),
        ("https://localhost:3000", "https://localhost"),
        ("https://localhost:3000", "https://localhost:3001"),
        ("https://localhost", "https://localhost:3000"),
        ("https://app.example.com/docs/*", "https://app.example.com"),
        ("https://app.example.com/docs/*", "https://app.example.com/doc"),
        ("https://app.example.com/docs/*", "https://app.example.com/DOCS/a"),
        ("https://app.example.com/docs/*", "https://app.example.com/docs/../admin"),
        ("https://app.example.com/docs/*", "https://app.example.com/docs/%2E%2E/admin"),
        ("http://[::1]:8080", "http://[::2]:8080"),
        ("http://[::1]:8080", "http://[::1%25eth0]:8080"),
    ],
)
def test_url_does_not_match(pattern: str, url: str) -> None:
    globs.check_url_pattern(pattern)
    assert not globs.url_matches(pattern, url)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "1-256"),
        ("https://" + "a" * 250, "1-256"),
        ("ftp://example.com", "http or https"),
        ("https:example.com", "port"),
        ("https://*", "at least two labels"),
        ("*.com", "at least two labels"),
        ("https://app.*.example.com", "leftmost label"),
        ("https://app*.example.com", "letters, digits"),
        ("https://*.*.example.com", "leftmost label"),
        ("https://example.com.", "empty label"),
        ("https://user@example.com", "credentials"),
        ("https://example.com:0", "port"),
        ("https://example.com:http", "port"),
        ("https://example.com/?a=1", "query or fragment"),
        ("https://example.com/#top", "query or fragment"),
        ("https://exa mple.com", "printable ASCII"),
        ("https://example.com\\", "backslashes"),
        ("https://[fe80::1%eth0]", "zone"),
        ("https://[not-v6]", "IPv6"),
    ],
)
def test_invalid_url_patterns_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        globs.check_url_pattern(pattern)


def test_an_invalid_url_pattern_matches_nothing() -> None:
    assert not globs.url_matches("https://*", "https://example.com")
    assert not globs.url_matches("", "https://example.com")


def test_any_url_matches() -> None:
    rules = ["https://app.example.com", "http://localhost:3000"]
    assert globs.any_url_matches(rules, "http://localhost:3000")
    assert not globs.any_url_matches(rules, "https://evil.com")
    assert not globs.any_url_matches([], "https://app.example.com")


LABELS = st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}", fullmatch=True)


@given(st.lists(LABELS, min_size=1, max_size=4), st.sampled_from(["http", "https"]))
def test_a_wildcard_host_covers_every_subdomain_and_never_the_apex(
    prefix: list[str], scheme: str
) -> None:
    host = ".".join([*prefix, "example", "com"])
    assert globs.url_matches(f"{scheme}://*.example.com", f"{scheme}://{host}/p")
    assert globs.url_matches("*.example.com", f"{scheme}://{host.upper()}")
    assert not globs.url_matches(f"{scheme}://*.example.com", f"{scheme}://example.com")
    assert not globs.url_matches("*.example.com", f"{scheme}://{host}.evil.com")


# Pieces attackers splice into URLs; joined at random they often do spell ".example.com".
HOSTILE_SUFFIX = st.lists(
    st.sampled_from(
        [
            ".",
            ".example",
            ".com",
            "example.com",
            ".EXAMPLE.COM",
            "#",
            "?",
            "/",
            "\\",
            "@",
            ":443",
            ":",
            "%2e",
            " ",
            "\t",
            "evil",
            "-",
            "_",
            "\u0430",
        ]
    ),
    max_size=8,
).map("".join)


@example(".example.com")
@example(".a.example.com:443/x")
@example("#.example.com")
@given(HOSTILE_SUFFIX)
def test_a_wildcard_host_only_matches_when_the_real_host_is_under_it(suffix: str) -> None:
    # Whatever follows "https://evil.com", a match is only allowed when the authority a
    # browser would connect to really ends in ".example.com".
    if globs.url_matches("https://*.example.com", f"https://evil.com{suffix}"):
        authority = "evil.com" + re.split(r"[/?#]", suffix, maxsplit=1)[0].lower()
        assert authority.removesuffix(":443").endswith(".example.com")
        assert not set(authority) & set("@\\ %\t\u0430")


@given(
    st.sampled_from(["https://app.example.com", "*.example.com", "http://x.test:8080/a/*"]),
    st.sampled_from(
        [
            "https://app.example.com",
            "https://APP.example.com:443/path",
            "http://x.test:8080/a/b",
            "https://a.b.example.com",
            "https://example.com",
            "ftp://app.example.com",
            "https://bad\\host.example.com",
            "not a url",
        ]
    ),
)
def test_a_remembered_url_answers_as_a_fresh_parse(pattern: str, url: str) -> None:
    # Parsed URLs are remembered: the answers are those of a parse made just now.
    globs._url_or_none.cache_clear()
    fresh = globs.url_matches(pattern, url)
    assert globs.url_matches(pattern, url) is fresh  # from the cache
    try:
        host: str | None = globs._parse(url, pattern=False).host
    except ValueError:
        host = None
    assert globs.host_of(url) == host
