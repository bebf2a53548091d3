"""Rate, token, concurrency and budget limits behind one small protocol.

* :mod:`.base`: :class:`Limiter`, and :class:`CounterSeeder` (how budget counters come from
  the ledger);
* :mod:`.memory`: :class:`MemoryLimiter`, for one process;
* :mod:`.redis`: :class:`RedisLimiter`, shared by every instance through Lua scripts
  (``lua/``, package data);
* :mod:`.resilient`: :class:`ResilientLimiter`, Redis with an in-process fallback;
* :mod:`.keeper`: what must outlive Redis (marker promises, long windows' state).

The admission types themselves (windows, budgets, their kinds) are in
:mod:`keyplane.domain.admission`.
"""

from keyplane.limits.base import CounterInstaller, CounterSeeder, Limiter

__all__ = ["CounterInstaller", "CounterSeeder", "Limiter"]
