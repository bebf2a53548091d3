"""Leave room on PostgreSQL's pages of the rollup tables, so their upserts update in place.

Every usage batch adds to the same few rows of ``usage_rollups`` and ``usage_analytics`` (its
key's current minute, hour, day, per model and feature), and the verify outcome flush does the
same to ``verify_analytics``. On a full page (PostgreSQL's default fill factor is 100) such an
update writes the new row version on another page and a new entry in every index of the table,
three for ``usage_analytics``. With room left on the page, and no indexed column changed (only
the measures change), PostgreSQL makes a heap-only update: same page, no new index entry.

SQLite has no fill factor: nothing to do there. Pages written before this migration keep
their layout until rewritten (``VACUUM FULL``); new pages get the room.

Revision ID: 0023_rollup_fillfactor
Revises: 0022_analytics_dimension_index
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0023_rollup_fillfactor"
down_revision = "0022_analytics_dimension_index"
branch_labels = None
depends_on = None

#: The tables whose rows are updated in place over and over, and the room kept for it.
ROLLUP_TABLES = ("usage_rollups", "usage_analytics", "verify_analytics")
FILLFACTOR = 70


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ROLLUP_TABLES:
        # Constant names and number only: nothing from outside reaches this statement.
        op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ROLLUP_TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
