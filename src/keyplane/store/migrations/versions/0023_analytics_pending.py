"""Usage waiting to be folded into the analytics rollups.

The ledger's group commit used to upsert every rollup row its reports touch (about 50 for a
batch over 20 models and 5 features) inside the transaction every report waits for. It now
adds one row here, the batch summed per key, minute, model and feature; a background pass
(and every analytics read) folds these rows into ``usage_analytics``, deleting them in the
same transaction, so each report is still counted exactly once.

Revision ID: 0023_analytics_pending
Revises: 0022_analytics_dimension_index
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_analytics_pending"
down_revision = "0022_analytics_dimension_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_analytics_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cells", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_analytics_pending"),
    )


def downgrade() -> None:
    op.drop_table("usage_analytics_pending")
