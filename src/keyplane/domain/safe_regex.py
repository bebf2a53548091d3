"""User-agent rules as regular expressions that cannot stall the verify path.

Python's ``re`` backtracks, and a rule is written by a tenant while the subject is written by
whoever sends the request: one careless or hostile pattern such as ``(a+)+$`` would let any
client burn seconds of CPU per request. So a pattern is accepted only when its parsed tree
shows that backtracking stays small:

* no backreferences, lookaround or conditional groups (``re`` gives them no bound at all);
* no repeat inside a looping repeat and no alternation inside one: the body of ``*``, ``+`` or
  ``{m,n}`` then matches one fixed-width way, so the loop only chooses how many times to run;
* at most three unbounded repeats;
* a budget on the ways the remaining repeats and alternatives can split a subject of
  ``MAX_SUBJECT_LENGTH`` characters. Counting repeats alone is not enough: ``\\d*\\d*\\d*x``
  has three and takes minutes on 1024 digits.

Subjects longer than ``MAX_SUBJECT_LENGTH`` never match, which bounds the work per request.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache

# The checks walk the tree the regex engine itself will run, so they cannot disagree with it
# about what a pattern means; re-implementing regex syntax here would invite such mismatches.
# re._parser is private (Python 3.11+): this is the only place that touches it. Its public
# alias sre_parse is avoided because importing it emits a DeprecationWarning.
from re import _parser  # type: ignore[attr-defined]
from typing import Any

MAX_PATTERN_LENGTH = 256
MAX_SUBJECT_LENGTH = 1024
MAX_UNBOUNDED_REPEATS = 3
# Distinct ways the engine may assign subject positions to repeats and branches, counting the
# start positions an unanchored search tries. At N**2 (about a million) the worst accepted
# patterns measured took up to ~20 ms on a 1024-character subject; at N**3 a second or more,
# which is a denial of service on a hot path.
BACKTRACKING_BUDGET = MAX_SUBJECT_LENGTH**2

_LEAVES = frozenset(
    {_parser.LITERAL, _parser.NOT_LITERAL, _parser.ANY, _parser.IN, _parser.AT, _parser.CATEGORY}
)
_REPEATS = frozenset({_parser.MAX_REPEAT, _parser.MIN_REPEAT, _parser.POSSESSIVE_REPEAT})
_ANCHORS = frozenset({_parser.AT_BEGINNING, _parser.AT_BEGINNING_STRING})
_UNBOUNDED: int = _parser.MAXREPEAT


def _check(items: Any, *, in_loop: bool) -> int:
    """Refuse the constructs that backtrack without bound; return the unbounded repeats seen.

    ``in_loop`` is true inside the body of a repeat that may run more than once.
    """
    unbounded = 0
    for op, av in items:
        if op in _LEAVES:
            continue
        if op is _parser.GROUPREF:
            raise ValueError("backreferences (\\1, (?P=name)) are not allowed")
        if op is _parser.GROUPREF_EXISTS:
            raise ValueError("conditional groups (?(1)...) are not allowed")
        if op is _parser.ASSERT or op is _parser.ASSERT_NOT:
            raise ValueError("lookahead and lookbehind assertions are not allowed")
        if op is _parser.BRANCH:
            # The parser turns single-character alternatives such as (a|b) into a character
            # class, which is harmless; what reaches here can match one text in several ways.
            if in_loop:
                raise ValueError(
                    "alternation inside a repeat, like (a|ab)*, is not allowed: "
                    "it can backtrack catastrophically"
                )
            unbounded += sum(_check(branch, in_loop=False) for branch in av[1])
        elif op is _parser.SUBPATTERN:
            unbounded += _check(av[3], in_loop=in_loop)
        elif op is _parser.ATOMIC_GROUP:
            unbounded += _check(av, in_loop=in_loop)
        elif op in _REPEATS:
            low, high, body = av
            # Even an optional item splits a loop's text in several ways: (a?a?)* is
            # exponential although no quantifier in it goes above one.
            if in_loop and (high > 1 or low != high):
                raise ValueError(
                    "nested repeats, like (a+)+ or (\\w+\\s?)*, are not allowed: "
                    "they can backtrack catastrophically"
                )
            unbounded += int(high == _UNBOUNDED)
            unbounded += _check(body, in_loop=in_loop or high > 1)
        else:
            raise ValueError("the pattern uses a construct that is not supported")
    return unbounded


def _ways(items: Any, *, tail: bool) -> int:
    """An upper bound on the ways a sequence can match from one start position.

    ``tail`` is true when nothing follows the sequence: a repeat there never gives back
    characters, since the first time it is satisfied the whole search has succeeded.
    """
    ways = 1
    last = len(items) - 1
    for index, (op, av) in enumerate(items):
        ways *= _item_ways(op, av, tail=tail and index == last)
    return ways


def _item_ways(op: Any, av: Any, *, tail: bool) -> int:
    if op is _parser.BRANCH:
        return sum(_ways(branch, tail=tail) for branch in av[1])
    if op is _parser.SUBPATTERN:
        return _ways(av[3], tail=tail)
    if op is _parser.ATOMIC_GROUP:
        return _ways(av, tail=tail)
    if op in _REPEATS:
        low, high, body = av
        if high <= 1:
            inner = _ways(body, tail=tail)
            return inner + 1 if low == 0 and high == 1 else inner
        # _check guarantees a looping body matches one way, so only the count varies.
        if tail:
            return int(min(max(low, 1), MAX_SUBJECT_LENGTH))
        return int(min(high - low + 1, MAX_SUBJECT_LENGTH))
    return 1


def _anchored(compiled: re.Pattern[str], tree: Any) -> bool:
    # The engine tries a ^-anchored pattern at position 0 only; under MULTILINE ^ matches
    # after every newline, so such a pattern counts as unanchored.
    if compiled.flags & re.MULTILINE or not len(tree):
        return False
    op, av = tree[0]
    return bool(op is _parser.AT and av in _ANCHORS)


@lru_cache(maxsize=1024)
def compile_safe(pattern: str) -> re.Pattern[str]:
    """Compile a user-agent pattern, or raise ValueError saying why it is unsafe or invalid.

    Cached, so verifying a key does not re-validate its rule on every request.
    """
    if not pattern:
        raise ValueError("the pattern is empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"the pattern is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        with warnings.catch_warnings():
            # Python warns about syntax whose meaning will change (``[[`` in a set); such a
            # pattern is ambiguous, so refuse it rather than guess which meaning was meant.
            warnings.simplefilter("error")
            compiled = re.compile(pattern)
            tree = _parser.parse(pattern)
    except (FutureWarning, DeprecationWarning) as exc:
        raise ValueError(f"the pattern is ambiguous: {exc}") from None
    except re.error as exc:
        raise ValueError(f"the pattern does not compile: {exc.msg}") from None
    except (OverflowError, RecursionError):
        raise ValueError("the pattern does not compile: it is too large or too deep") from None
    if _check(tree, in_loop=False) > MAX_UNBOUNDED_REPEATS:
        raise ValueError(
            f"at most {MAX_UNBOUNDED_REPEATS} unbounded repeats (*, +, {{n,}}) are allowed"
        )
    starts = 1 if _anchored(compiled, tree) else MAX_SUBJECT_LENGTH
    if starts * _ways(tree, tail=True) > BACKTRACKING_BUDGET:
        raise ValueError(
            "the pattern could backtrack too much: use fewer repeats (*, +, {m,n}) "
            "one after another, or anchor it with ^"
        )
    return compiled


def ua_matches(compiled: re.Pattern[str], user_agent: str | None) -> bool:
    """True when the pattern is found anywhere in ``user_agent`` (``re.search``).

    A missing or overlong user agent never matches; the length cap is what keeps even an
    accepted pattern's worst case small.
    """
    if user_agent is None or len(user_agent) > MAX_SUBJECT_LENGTH:
        return False
    return compiled.search(user_agent) is not None
