"""Appending to an organization's audit chain after a remembered head, in as few round trips
as the database allows.

The writer (``store/audit.py``) remembers each organization's last head. For the next entry
it computes the rows from that head, then moves the head *only if it is still the one
remembered* and inserts the rows in the same step:

- PostgreSQL: one statement, ``WITH moved AS (UPDATE audit_heads .. WHERE seq = :old AND
  hash = :old RETURNING ..) INSERT INTO audit_log .. SELECT .. WHERE EXISTS (moved)``. The
  UPDATE takes the head's row lock; a concurrent writer's UPDATE waits for our commit, then
  re-checks its condition against the committed head (READ COMMITTED re-evaluates the WHERE
  on the newest row version), finds it moved and inserts nothing.
- SQLite: the conditional UPDATE is a write, so the database's write lock is ours before
  the head is compared; the INSERT follows only if the UPDATE matched, both sent to the
  driver in one trip to aiosqlite's thread (``store/sqlite_driver.py``).

If the head moved (another instance wrote, an earlier transaction rolled back, someone edited
the table), nothing is written and the caller falls back to locking and reading the head. So
a stale memory costs a retry, never a fork.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, union_all, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from keyplane.store.sqlite_driver import bind_processors, row_values, run_on_driver
from keyplane.store.tables import audit_heads, audit_log

#: A chain head: the last entry's seq and hash.
Head = tuple[int, str]

#: The most entries one fast-path statement carries (a bulk change beyond this takes the
#: locking path, which inserts any number); also bounds the statements built and cached here.
MAX_ROWS = 16

_COLUMNS = [c.name for c in audit_log.columns]


def _head_moved() -> Any:
    heads = audit_heads.c
    return (
        update(audit_heads)
        .where(
            heads.org_id == bindparam("head_org_id"),
            heads.seq == bindparam("head_seq"),
            heads.hash == bindparam("head_hash"),
        )
        .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
    )


@functools.cache
def _postgresql_statement(count: int) -> Any:
    # Built once per row count from bound parameters only, so SQLAlchemy compiles it once
    # and asyncpg prepares it once per connection (a statement with the values inlined would
    # be compiled again for every entry).
    moved = _head_moved().returning(audit_heads.c.org_id).cte("moved")
    # One SELECT per entry FROM the CTE: it yields a row only if the head moved. (Not a
    # VALUES list: SQLAlchemy does not cache statements holding one.)
    entries = [
        select(
            *[bindparam(f"{c.name}_{index}", type_=c.type).label(c.name) for c in audit_log.columns]
        ).select_from(moved)
        for index in range(count)
    ]
    chosen = entries[0] if count == 1 else union_all(*entries)
    return insert(audit_log).from_select(_COLUMNS, chosen).add_cte(moved)


async def append_after(
    conn: AsyncConnection,
    org_id: str,
    expected: Head,
    new: Head,
    rows: Sequence[dict[str, Any]],
    *,
    is_sqlite: bool,
) -> bool:
    """Move ``org_id``'s head from ``expected`` to ``new`` and insert ``rows`` (which chain
    from ``expected`` to ``new``), in ``conn``'s transaction. False, with nothing written, if
    the head is not ``expected`` any more or there are more than :data:`MAX_ROWS` rows."""
    if not 0 < len(rows) <= MAX_ROWS:
        return False
    head = {
        "head_org_id": org_id,
        "head_seq": expected[0],
        "head_hash": expected[1],
        "new_seq": new[0],
        "new_hash": new[1],
    }
    if is_sqlite:
        return await _append_on_sqlite(conn, head, rows)
    parameters = dict(head)
    for index, row in enumerate(rows):
        parameters.update({f"{name}_{index}": row[name] for name in _COLUMNS})
    inserted = (await conn.execute(_postgresql_statement(len(rows)), parameters)).rowcount
    return inserted == len(rows)


#: SQLite: the head's conditional move and the entries' insert, as the driver takes them.
_SQLITE_HEAD_MOVED = (
    "UPDATE audit_heads SET seq = :new_seq, hash = :new_hash"
    " WHERE org_id = :head_org_id AND seq = :head_seq AND hash = :head_hash"
)
#: ``INSERT INTO audit_log (org_id, seq, ...) VALUES (?, ?, ...)``, every column in order.
_SQLITE_INSERT = str(
    insert(audit_log).values(dict.fromkeys(_COLUMNS)).compile(dialect=sqlite.dialect())
)


async def _append_on_sqlite(
    conn: AsyncConnection, head: dict[str, Any], rows: Sequence[dict[str, Any]]
) -> bool:
    # Both statements in one trip to aiosqlite's thread (``store/sqlite_driver.py``), the
    # values converted by the columns' own types so they read back as SQLAlchemy wrote them.
    processors = bind_processors(audit_log, conn.dialect)
    values = [row_values(processors, _COLUMNS, row) for row in rows]

    def append(db: sqlite3.Connection) -> bool:
        if db.execute(_SQLITE_HEAD_MOVED, head).rowcount != 1:
            return False
        db.executemany(_SQLITE_INSERT, values)
        return True

    return await run_on_driver(conn, append)
