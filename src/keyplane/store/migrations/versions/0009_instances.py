"""The instance registry for confirmed revocations without Redis.

Revision ID: 0009
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
    )
    op.create_table(
        "eviction_acks",
        sa.Column("eviction_id", sa.String(40), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("acked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("eviction_id", "instance_id", name="pk_eviction_acks"),
    )
    op.create_index("ix_eviction_acks_acked_at", "eviction_acks", ["acked_at"])


def downgrade() -> None:
    op.drop_index("ix_eviction_acks_acked_at", table_name="eviction_acks")
    op.drop_table("eviction_acks")
    op.drop_table("instances")
