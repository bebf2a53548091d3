"""User-agent rules as regular expressions that cannot stall the verify path.

A rule is written by a tenant while the subject is written by whoever sends the request, so
the matching engine must bound the work whatever both hold. Python's ``re`` backtracks:
``(a+)+$`` or ``^\\d*\\d*(\\d){1000}x`` against a thousand characters takes seconds to
minutes, and no list of "dangerous shapes" catches them all (an earlier guard of that kind
was bypassed). So rules are matched with RE2 (Google's ``google-re2`` binding), which runs in
time linear in the subject for every pattern it accepts; three bounds keep the constant small:

* ``MAX_PATTERN_LENGTH`` characters of pattern;
* ``MAX_PROGRAM_SIZE`` instructions in the compiled program. RE2 falls back from its DFA to
  an NFA when the DFA's memory runs out, and the NFA costs subject length x program size:
  ``(.*){1,1000}(.*){1,1000}x`` compiles to 22,000 instructions and took 100+ ms per match.
  At 500 the worst case measured was a few milliseconds on a 1,024-character subject;
* ``MAX_SUBJECT_LENGTH`` characters of user agent; a longer one never matches (fail closed:
  a rule only ever grants access, and real user agents are a few hundred characters).

RE2 has no backreferences, lookaround, atomic groups or possessive quantifiers (they are what
makes a linear-time guarantee impossible): such a pattern is refused with a clear message.
Its ``\\d``, ``\\w`` and ``\\s`` are ASCII-only and ``$`` is the end of the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re2  # google-re2: no type information, so it is wrapped in UserAgentRule below

MAX_PATTERN_LENGTH = 256
MAX_SUBJECT_LENGTH = 1024
MAX_PROGRAM_SIZE = 500
# RE2's memory budget per compiled pattern (program plus DFA state cache). Each cached rule
# may grow its DFA cache up to this, so it also bounds the memory a tenant's rules can take:
# at most _CACHE_SIZE x _MAX_MEM.
_MAX_MEM = 1 << 20
_CACHE_SIZE = 512


def _options() -> Any:
    options = re2.Options()
    options.max_mem = _MAX_MEM
    # RE2 would otherwise write every refused pattern to stderr, the log stream.
    options.log_errors = False
    return options


@dataclass(frozen=True, slots=True)
class UserAgentRule:
    """A compiled user-agent pattern. Equal when the pattern text is."""

    pattern: str
    _compiled: Any = field(compare=False, repr=False)

    def matches(self, user_agent: str | None) -> bool:
        """True when the pattern is found anywhere in ``user_agent`` (a search, not a match).

        A missing or overlong user agent never matches.
        """
        if self._compiled is None or user_agent is None or len(user_agent) > MAX_SUBJECT_LENGTH:
            return False
        return _found(self, user_agent)


@lru_cache(maxsize=4096)
def _found(rule: UserAgentRule, user_agent: str) -> bool:
    # Remembered (bounded): a key's clients send the same few user agents, request after
    # request, and each search costs more in the binding's Python layer than in RE2.
    try:
        return rule._compiled.search(user_agent) is not None
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\ud800") has no UTF-8 form for RE2 to read.
        return False


#: A rule that matches nothing: what a stored pattern RE2 refuses turns into (fail closed).
NEVER = UserAgentRule("", None)


@lru_cache(maxsize=_CACHE_SIZE)
def compile_safe(pattern: str) -> UserAgentRule:
    """Compile a user-agent pattern, or raise ValueError saying why it is refused.

    Cached, so a rule is compiled once, not on every verify.
    """
    if not pattern:
        raise ValueError("the pattern is empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"the pattern is longer than {MAX_PATTERN_LENGTH} characters")
    if "\x00" in pattern:
        raise ValueError("the pattern holds a NUL character")
    try:
        compiled = re2.compile(pattern, _options())
    except UnicodeEncodeError:
        raise ValueError("the pattern is not valid Unicode text") from None
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"the pattern is not supported: {reason} (RE2 syntax: no backreferences, "
            "lookaround, atomic groups or possessive quantifiers)"
        ) from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise ValueError(
            f"the pattern is too complex ({compiled.programsize} instructions, at most "
            f"{MAX_PROGRAM_SIZE}): use smaller counted repeats like {{n}} or {{m,n}}"
        )
    return UserAgentRule(pattern, compiled)


def compile_stored(pattern: str) -> UserAgentRule:
    """A stored pattern's rule; one that is refused today (stored by an older version with
    another engine) matches nothing rather than failing every verify of the key."""
    try:
        return compile_safe(pattern)
    except ValueError:
        return NEVER


def ua_matches(rule: UserAgentRule, user_agent: str | None) -> bool:
    """True when ``rule`` is found in ``user_agent``; see :meth:`UserAgentRule.matches`."""
    return rule.matches(user_agent)
