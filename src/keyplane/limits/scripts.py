"""The Lua scripts of :mod:`keyplane.limits.redis` and the exact constants they are given.

The scripts are package data (``keyplane/limits/lua/*.lua``).

Integer exactness. Lua numbers are doubles, exact up to 2^53. gcra.py scales times by the
limit L (us * L), which for L up to 10^12 is far past 2^53. The scripts instead keep a window's
*debt* at an instant t0: the scaled TAT minus ``t0 * L``, written as ``u * P + v`` with P the
period in microseconds and ``0 <= v < P``. Then ``u`` counts whole emission intervals (at most
the burst, 10^12 < 2^40, plus settled overruns; capped at 2^50) and ``v < P <= 2592 * 10^9 <
2^42``. A request of cost c fits when ``(u + c) * P + v <= burst * P``, that is when ``u + c +
(v > 0) <= burst``: no product at all. Time enters only as the scaled elapsed time
``(now - t0) * L``, which is split into ``(q, r)`` by P with a long multiplication over the bits
of the elapsed microseconds (``muldiv`` in ``lua/arith.lua``): its remainder stays below 2P and
its quotient is compared with ``u`` as it grows, so it stops before passing 2^51. Python then
rebuilds the exact scaled TAT (``now * L + u * P + v``, arbitrary-precision) and reads
remaining, reset and retry-after from :func:`gcra.check` itself, so they match
MemoryLimiter's to the microsecond. Budgets (up to 10^18 micro-credits) stay decimal strings,
added with Redis's 64-bit ``INCRBY``/``HINCRBY`` and compared in the script in two limbs of base
10^9.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from keyplane.domain import gcra
from keyplane.domain.admission import WindowAsk

#: Window parameters and costs the scripts handle exactly (see the module docstring).
MAX_WINDOW_VALUE = 2**50


class Script:
    """A Lua script run by its SHA1; sent in full only when the server does not know it.

    Args:
        files: the script's parts, concatenated in order, from ``package``'s ``lua`` folder.
        package: the package whose ``lua`` folder holds them.
    """

    def __init__(self, *files: str, package: str = "keyplane.limits") -> None:
        lua = resources.files(package) / "lua"
        self.text = "\n".join((lua / name).read_text(encoding="utf-8") for name in files)
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # First use on this server (or its script cache was flushed): EVAL runs the script
            # and caches it, so the next call is one EVALSHA again.
            return await redis.eval(self.text, len(keys), *keys, *args)


@dataclass(frozen=True)
class Scripts:
    admit: Script
    settle: Script
    sweep: Script
    install: Script
    add_spent: Script
    restore: Script
    reset: Script


@cache
def scripts() -> Scripts:
    return Scripts(
        admit=Script("arith.lua", "holds.lua", "admit.lua"),
        settle=Script("arith.lua", "holds.lua", "settle.lua"),
        sweep=Script("arith.lua", "holds.lua", "sweep.lua"),
        install=Script("arith.lua", "install_spent.lua"),
        add_spent=Script("add_spent.lua"),
        restore=Script("arith.lua", "restore.lua"),
        reset=Script("arith.lua", "holds.lua", "reset.lua"),
    )


def window_args(window: gcra.Window) -> list[int]:
    """L // P, L % P, P, P // L, P % L, L: the constants the scripts need, computed exactly."""
    for value in (window.limit, window.period_us):
        if not 1 <= value <= MAX_WINDOW_VALUE:
            raise ValueError(f"window limits and periods must lie in 1..{MAX_WINDOW_VALUE}")
    if not 0 <= window.burst <= MAX_WINDOW_VALUE:
        raise ValueError(f"window bursts must lie in 0..{MAX_WINDOW_VALUE}")
    limit, period = window.limit, window.period_us
    return [limit // period, limit % period, period, period // limit, period % limit, limit]


def window_id(ask: WindowAsk) -> str:
    """A long window's name in the database (``limit_windows.window``), at most 200 long."""
    window = ask.window
    name = f"{ask.kind}:{ask.name}:{window.limit}:{window.period_us}"
    if ask.calendar_day:
        name += ":day"
    if len(name) > 200:
        name = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return name


def full_burst_us(window: gcra.Window) -> int:
    """How long a window with its whole burst used takes to be full again (us, rounded up)."""
    return -(-window.burst * window.period_us // window.limit)
