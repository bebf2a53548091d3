"""The instance registry in PostgreSQL, for deployments that share a database but no Redis.

The same contract as the Redis registry (``services.instances.InstanceRegistry``). Times are
the database's own (``now()``), so instances with skewed clocks still agree on who is live.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.errors import RegistryUnavailableError, StorageError
from keyplane.store.tables import eviction_acks, instances
from keyplane.store.unit import UnitOfWork

#: Acknowledgements outlive any wait for them (timeouts are capped far below this).
ACK_RETENTION_SECONDS = 600
#: A silent instance is forgotten after this long (live is much shorter).
REGISTRY_RETENTION_SECONDS = 24 * 3600


def _ago(seconds: float) -> object:
    # make_interval(years, months, weeks, days, hours, mins, secs)
    return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds)


class SqlInstanceRegistry:
    """The registry over the shared unit of work (PostgreSQL only: it relies on ``now()``
    and ``make_interval``). Every method is one transaction; StorageError when the database
    fails."""

    def __init__(self, unit: UnitOfWork, liveness_seconds: float) -> None:
        self._unit = unit
        self._liveness = liveness_seconds

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._unit.write() as conn:
                yield conn
        except StorageError as exc:
            cause = exc.__cause__ or exc
            raise RegistryUnavailableError(
                f"instance registry unavailable ({type(cause).__name__})"
            ) from exc

    async def beat(self, instance_id: str) -> None:
        upsert = insert(instances).values(id=instance_id, last_seen=func.now())
        async with self._begin() as conn:
            await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[instances.c.id], set_={"last_seen": func.now()}
                )
            )
            await conn.execute(
                delete(instances).where(instances.c.last_seen < _ago(REGISTRY_RETENTION_SECONDS))
            )
            await conn.execute(
                delete(eviction_acks).where(eviction_acks.c.acked_at < _ago(ACK_RETENTION_SECONDS))
            )

    async def leave(self, instance_id: str) -> None:
        async with self._begin() as conn:
            await conn.execute(delete(instances).where(instances.c.id == instance_id))

    async def live(self) -> set[str]:
        query = select(instances.c.id).where(instances.c.last_seen >= _ago(self._liveness))
        async with self._begin() as conn:
            return {str(row) for row in (await conn.execute(query)).scalars()}

    async def acknowledge(self, eviction_id: str, instance_id: str) -> None:
        statement = insert(eviction_acks).values(
            eviction_id=eviction_id, instance_id=instance_id, acked_at=func.now()
        )
        async with self._begin() as conn:
            await conn.execute(statement.on_conflict_do_nothing())

    async def acknowledged(self, eviction_id: str) -> set[str]:
        query = select(eviction_acks.c.instance_id).where(
            eviction_acks.c.eviction_id == eviction_id
        )
        async with self._begin() as conn:
            return {str(row) for row in (await conn.execute(query)).scalars()}
