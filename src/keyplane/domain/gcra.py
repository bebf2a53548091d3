"""The generic cell rate algorithm (GCRA): exact rate limiting with bursts, in integers.

A window allows ``limit`` units per ``period``, at most ``burst`` of them back to back. Its
whole state is one number, the theoretical arrival time (TAT): the instant the window would be
empty again. A request costing ``c`` units is allowed when, after pushing the TAT ``c``
emission intervals (``period / limit``) forward, it is no more than ``burst`` intervals ahead
of now.

Times are kept *scaled by the limit* (``microseconds * limit``) so that the emission interval
is exactly ``period`` microseconds: no float and no rounding, so a limit of 50 per minute
admits exactly 50 requests at once, never 49 or 51.

The functions here check and consume several windows together, all or nothing, which is what
one atomic step in memory or one Redis script must do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keyplane.domain.frozen import fast_init

MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    period_us: int
    burst: int

    @property
    def capacity(self) -> int:
        """How far (scaled) the TAT may run ahead of now."""
        return self.burst * self.period_us


@fast_init
@dataclass(frozen=True, slots=True)
class WindowState:
    """One window after a check: what the verdict reports."""

    allowed: bool
    remaining: int
    #: When the window is full again (microseconds since the epoch).
    reset_at_us: int
    #: How long until this request could pass (microseconds); ``None`` when it never can
    #: (it costs more than the burst) or when it was allowed.
    retry_after_us: int | None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def check(window: Window, tat: int | None, now_us: int, cost: int) -> tuple[WindowState, int]:
    """Check one window for a request of ``cost`` units; return its state and the new TAT.

    The new TAT is what to store if (and only if) every window of the request is allowed.
    """
    now = now_us * window.limit
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * window.period_us
    if new_tat - now <= window.capacity:
        remaining = (window.capacity - (new_tat - now)) // window.period_us
        return WindowState(True, remaining, _ceil_div(new_tat, window.limit), None), new_tat
    remaining = max(0, (window.capacity - (base - now)) // window.period_us)
    retry: int | None = None
    if cost * window.period_us <= window.capacity:
        retry = _ceil_div(new_tat - now - window.capacity, window.limit)
    return WindowState(False, remaining, _ceil_div(base, window.limit), retry), base


def check_all(
    windows: Sequence[Window], tats: Sequence[int | None], now_us: int, costs: Sequence[int]
) -> tuple[bool, list[WindowState], list[int | None]]:
    """Check every window; the returned TATs advance only when all of them allow the request."""
    states: list[WindowState] = []
    advanced: list[int | None] = []
    for window, tat, cost in zip(windows, tats, costs, strict=True):
        state, new_tat = check(window, tat, now_us, cost)
        states.append(state)
        advanced.append(new_tat)
    allowed = all(state.allowed for state in states)
    return allowed, states, (advanced if allowed else list(tats))


def adjust(window: Window, tat: int | None, now_us: int, delta: int) -> int | None:
    """Charge (``delta > 0``) or refund (``delta < 0``) units after the fact.

    Used when a usage report settles an estimate: an overrun is charged even past the burst
    (so later requests wait it out), and a refund never moves the TAT before now.
    """
    now = now_us * window.limit
    base = now if tat is None or tat < now else tat
    return max(now, base + delta * window.period_us)
