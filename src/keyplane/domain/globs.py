"""Glob patterns: model names (``gpt-4*``) and the URLs or origins a key may be used from.

Model globs are deliberately tiny: ``*`` is any run of characters, ``?`` one character, and
nothing else is special, so a pattern an operator types means what it looks like.

URL globs guard browser keys (``Origin`` and ``Referer`` checks), so they are parsed into
scheme, host, port and path and compared part by part, never as one string: a string glob
would let ``https://evil.com#.example.com`` satisfy ``https://*.example.com``. Anything odd
in the URL (credentials, backslashes, empty labels, unknown schemes, unparsable ports) makes
it match nothing: these rules only ever grant access, so failing closed is always safe.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

MAX_MODEL_PATTERN_LENGTH = 128
MAX_URL_PATTERN_LENGTH = 256
# Referer headers can carry long query strings; past this we stop looking rather than parse
# an arbitrarily large header on the hot path.
MAX_URL_LENGTH = 8192
MAX_HOST_LENGTH = 253

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Lower-cased DNS label; underscores appear in real hostnames, so they are tolerated.
_LABEL = re.compile(r"[a-z0-9_-]{1,63}", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)


def _is_plain_ascii(text: str) -> bool:
    """Printable ASCII without spaces: what every pattern and matched URL must be made of."""
    # The same as every character lying in "!".."~", done by three C-level string scans.
    return text.isascii() and text.isprintable() and " " not in text


@lru_cache(maxsize=2048)
def _glob_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """Compile a glob so that matching stays linear-ish whatever the pattern holds.

    A naive translation (``*`` to ``.*``) backtracks polynomially in the number of stars:
    ``*a*a*a*a*b`` against a long run of ``a`` takes ages. Globs do not need backtracking:
    the text before the first ``*`` must be a prefix, the text after the last one a suffix,
    and each piece in between can take its leftmost occurrence, since an earlier match always
    leaves at least as much room for the rest. Atomic groups encode exactly that.
    """
    pieces = [
        "".join("." if char == "?" else re.escape(char) for char in piece)
        for piece in pattern.split("*")
    ]
    if len(pieces) == 1:
        body = pieces[0]
    else:
        middle = "".join(f"(?>.*?{piece})" for piece in pieces[1:-1] if piece)
        body = f"{pieces[0]}{middle}.*{pieces[-1]}"
    # ASCII-only case folding: with Unicode folding "K" (Kelvin sign) would equal "k", and a
    # model name that merely looks like an allowed one must not pass.
    flags = re.DOTALL | (re.ASCII | re.IGNORECASE if ignore_case else 0)
    return re.compile(body, flags)


def model_matches(pattern: str, model: str) -> bool:
    """True when ``model`` fits the glob ``pattern``, ignoring ASCII case.

    ``*`` matches any run of characters (``/`` and ``-`` included) and ``?`` exactly one;
    every other character, ``[`` and ``]`` too, is literal.
    """
    return _glob_regex(pattern, True).fullmatch(model) is not None


def any_model_matches(patterns: Sequence[str], model: str) -> bool:
    # Loops, not any() over a generator, here and below: checked on every verify of a key
    # with rules, and a generator costs more than the match it wraps.
    for pattern in patterns:  # noqa: SIM110
        if model_matches(pattern, model):
            return True
    return False


def check_model_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a usable model glob, else raise ValueError."""
    if not 1 <= len(pattern) <= MAX_MODEL_PATTERN_LENGTH or not _is_plain_ascii(pattern):
        raise ValueError(
            f"model patterns are 1-{MAX_MODEL_PATTERN_LENGTH} printable ASCII characters "
            "without spaces"
        )
    return pattern


@dataclass(frozen=True, slots=True)
class _Address:
    """The parts of a URL (or of a URL pattern) that access rules look at."""

    scheme: str | None  # None: a pattern that accepts http and https
    wildcard: bool  # the host pattern began with "*.": one or more labels go in front
    host: str  # lower-cased name, or a bracketed and compressed IPv6 address
    port: int | None  # None: the scheme's default port
    path: str


def _split_host(host: str, *, pattern: bool) -> tuple[bool, str]:
    """Normalise a host; return whether it starts with a ``*`` label, and the rest."""
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        # A zone id names an interface on the server's side; it has no place in a rule.
        if "%" in inner:
            raise ValueError("IPv6 zone ids are not allowed")
        try:
            return False, f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            raise ValueError("invalid IPv6 address in brackets") from None
    labels = host.lower().split(".")
    wildcard = pattern and labels[0] == "*"
    if wildcard:
        labels = labels[1:]
        # Two fixed labels at least: "*.com" would admit every site under a public suffix.
        if len(labels) < 2:
            raise ValueError("a wildcard host needs at least two labels after it: *.example.com")
    if "" in labels:
        raise ValueError("host has an empty label (a trailing or doubled dot)")
    if "*" in labels:
        raise ValueError("* is only allowed as the whole leftmost label: *.example.com")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("host may only hold letters, digits, '-' and '_'")
    name = ".".join(labels)
    if len(name) > MAX_HOST_LENGTH:
        raise ValueError(f"host is longer than {MAX_HOST_LENGTH} characters")
    return wildcard, name


def _split_netloc(netloc: str, *, pattern: bool) -> tuple[bool, str, int | None]:
    # Parsed by hand rather than through SplitResult.hostname/.port, whose leniency (an empty
    # port, a port like "+80" on some versions) is exactly where parser differentials hide.
    if "@" in netloc:
        raise ValueError("credentials (user@host) are not allowed")
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = (netloc[: end + 1], netloc[end + 1 :]) if end >= 0 else (netloc, "")
    else:
        host, sep, port_text = netloc.partition(":")
        rest = sep + port_text
    if not host:
        raise ValueError("host is missing")
    wildcard, name = _split_host(host, pattern=pattern)
    if not rest:
        return wildcard, name, None
    port_text = rest[1:]
    if not rest.startswith(":") or not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 2**16:
        raise ValueError("port must be a number from 1 to 65535")
    return wildcard, name, int(port_text)


def _parse(text: str, *, pattern: bool) -> _Address:
    """Split a URL (or a URL pattern) into the parts rules compare; raise ValueError if odd."""
    # Whitespace and control characters are stripped or removed by urlsplit, and browsers
    # read "\" as "/": either way the host we would see is not the host the client meant.
    if not _is_plain_ascii(text) or "\\" in text:
        raise ValueError("only printable ASCII without spaces or backslashes is allowed")
    given_scheme = "://" in text
    parts = urlsplit(text if given_scheme else f"//{text}")
    if (given_scheme or not pattern) and parts.scheme not in _DEFAULT_PORTS:
        raise ValueError("the scheme must be http or https")
    if pattern and (parts.query or parts.fragment or "?" in text or "#" in text):
        raise ValueError("a query or fragment is not allowed")
    wildcard, host, port = _split_netloc(parts.netloc, pattern=pattern)
    return _Address(parts.scheme or None, wildcard, host, port, parts.path)


@lru_cache(maxsize=2048)
def _pattern_or_none(pattern: str) -> _Address | None:
    try:
        return _parse(pattern, pattern=True)
    except ValueError:
        return None


def check_url_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a usable URL or origin pattern, else raise ValueError.

    Accepted shapes: ``https://app.example.com``, ``https://*.example.com``,
    ``*.example.com`` (http or https), ``https://app.example.com/docs/*``,
    ``http://localhost:3000``, ``http://[::1]:8080``.
    """
    if not 1 <= len(pattern) <= MAX_URL_PATTERN_LENGTH:
        raise ValueError(f"URL patterns are 1-{MAX_URL_PATTERN_LENGTH} characters")
    _parse(pattern, pattern=True)
    return pattern


def _host_matches(rule: _Address, host: str) -> bool:
    if not rule.wildcard:
        return host == rule.host
    # "*" stands for one or more whole labels: the host must end with ".<rest>" and have
    # something before that dot. Both sides hold only validated labels, so the dot really is
    # a label boundary ("evilexample.com" and "example.com" do not qualify).
    return host.endswith(f".{rule.host}") and len(host) > len(rule.host) + 1


def _has_dot_segment(path: str) -> bool:
    # Browsers resolve "." and ".." (also percent-encoded) before sending a URL, so a path
    # that still holds one was crafted; "/docs/../admin" must not pass a "/docs/*" rule.
    return any(segment.lower().replace("%2e", ".") in {".", ".."} for segment in path.split("/"))


def _path_matches(rule_path: str, path: str) -> bool:
    if rule_path in {"", "/"}:
        return True
    if _has_dot_segment(path):
        return False
    glob = _glob_regex(rule_path, False)
    if not path:
        # A bare origin has no path: it fits only a rule whose path admits the root.
        return glob.fullmatch("/") is not None or glob.fullmatch("") is not None
    return glob.fullmatch(path) is not None


@lru_cache(maxsize=4096)
def _url_or_none(url: str) -> _Address | None:
    """A request's URL, parsed, or ``None`` when it is odd. Cached (bounded): a key's clients
    send the same few origins over and over, each checked against every rule."""
    try:
        return _parse(url, pattern=False)
    except ValueError:
        return None


def url_matches(pattern: str, url: str) -> bool:
    """True when ``url`` (a full URL or a bare origin) is covered by the URL ``pattern``.

    The scheme must match when the pattern names one. Hosts compare case-insensitively and a
    leading ``*`` label covers one or more labels. Ports compare after filling in the scheme's
    default. A pattern path is a glob over the URL's path (``*`` spans ``/``); no path means
    any path. Invalid patterns and suspicious URLs match nothing.
    """
    rule = _pattern_or_none(pattern)
    if rule is None or len(url) > MAX_URL_LENGTH:
        return False
    address = _url_or_none(url)
    if address is None:
        return False
    if address.scheme is None or (rule.scheme is not None and rule.scheme != address.scheme):
        return False
    default_port = _DEFAULT_PORTS[address.scheme]
    if (rule.port or default_port) != (address.port or default_port):
        return False
    return _host_matches(rule, address.host) and _path_matches(rule.path, address.path)


def any_url_matches(patterns: Sequence[str], url: str) -> bool:
    for pattern in patterns:  # noqa: SIM110
        if url_matches(pattern, url):
            return True
    return False


# -- host globs (``network.domains``) ----------------------------------------------------------

MAX_USER_AGENT_GLOB_LENGTH = 256


def check_host_pattern(pattern: str) -> str:
    """Return ``pattern`` normalised (lower case) if it is a usable host glob, else ValueError.

    ``app.example.com`` is that host only; ``*.example.com`` any host under it (one or more
    labels, never ``example.com`` itself). No scheme, port or path: those are the job of
    ``origins`` and ``referrers``.
    """
    if not 1 <= len(pattern) <= MAX_HOST_LENGTH + 2 or not _is_plain_ascii(pattern):
        raise ValueError(f"host patterns are 1-{MAX_HOST_LENGTH} printable ASCII characters")
    wildcard, host = _split_host(pattern, pattern=True)
    return f"*.{host}" if wildcard else host


@lru_cache(maxsize=2048)
def _host_rule(pattern: str) -> _Address | None:
    try:
        wildcard, host = _split_host(pattern, pattern=True)
    except ValueError:
        return None
    return _Address(None, wildcard, host, None, "")


def host_of(url: str | None) -> str | None:
    """The host of a URL or bare origin (lower case), or ``None`` when it is odd or absent."""
    if url is None or len(url) > MAX_URL_LENGTH:
        return None
    return _host_of(url)


def _host_of(url: str) -> str | None:
    address = _url_or_none(url)
    return None if address is None else address.host


def any_host_matches(patterns: Sequence[str], host: str) -> bool:
    """True when ``host`` (as :func:`host_of` gives it) fits one of the host globs."""
    for pattern in patterns:
        rule = _host_rule(pattern)
        if rule is not None and _host_matches(rule, host):
            return True
    return False


# -- user-agent globs (``network.user_agents``) --------------------------------------------------


def check_user_agent_glob(pattern: str) -> str:
    """Return ``pattern`` if it is a usable user-agent glob (printable ASCII, spaces allowed)."""
    if not (
        1 <= len(pattern) <= MAX_USER_AGENT_GLOB_LENGTH
        and pattern.isascii()
        and pattern.isprintable()
    ):
        raise ValueError(
            f"user agent globs are 1-{MAX_USER_AGENT_GLOB_LENGTH} printable ASCII characters"
        )
    return pattern


def any_user_agent_matches(patterns: Sequence[str], user_agent: str | None) -> bool:
    """True when the whole ``user_agent`` fits one glob (``*``, ``?``; ASCII case ignored).

    Matching is linear (see ``_glob_regex``); an agent longer than the regex rules' bound
    matches nothing, as there.
    """
    if user_agent is None or len(user_agent) > 1024:
        return False
    return any(_glob_regex(pattern, True).fullmatch(user_agent) for pattern in patterns)
