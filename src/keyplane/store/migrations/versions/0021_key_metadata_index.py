"""The metadata index: one row per scalar metadata value of a key (store/key_metadata.py).

Existing keys are indexed here, in batches, so filters match them from the first start.

Revision ID: 0021_key_metadata_index
Revises: 0020_plan_rotation
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.key_metadata import index_rows
from keyplane.store.types import JsonType

revision = "0021_key_metadata_index"
down_revision = "0020_plan_rotation"
branch_labels = None
depends_on = None

#: Keys read and indexed per round trip while backfilling.
BACKFILL_BATCH = 1000


def upgrade() -> None:
    index = op.create_table(
        "api_key_metadata",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("path", sa.String(600), nullable=False),
        sa.Column("value_digest", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            ondelete="CASCADE",
            name="fk_api_key_metadata_key_id_api_keys",
        ),
        sa.PrimaryKeyConstraint("key_id", "path", name="pk_api_key_metadata"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_api_key_metadata_lookup",
        "api_key_metadata",
        ["org_id", "path", "value_digest", "key_id"],
    )
    _backfill(index)


def _backfill(index: sa.Table) -> None:
    keys = sa.table(
        "api_keys", sa.column("id", sa.String), sa.column("org_id"), sa.column("metadata", JsonType)
    )
    connection = op.get_bind()
    after = ""
    while True:
        # Keyset pagination by id: each batch is one indexed read, whatever the table size.
        batch = connection.execute(
            sa.select(keys.c.id, keys.c.org_id, keys.c.metadata)
            .where(keys.c.id > after)
            .order_by(keys.c.id)
            .limit(BACKFILL_BATCH)
        ).all()
        if not batch:
            return
        rows = [row for key in batch for row in index_rows(key.id, key.org_id, key.metadata)]
        if rows:
            connection.execute(sa.insert(index), rows)
        after = batch[-1].id


def downgrade() -> None:
    op.drop_index("ix_api_key_metadata_lookup", table_name="api_key_metadata")
    op.drop_table("api_key_metadata")
