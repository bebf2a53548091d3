"""Durable limit state: each key's limit marker promise and its long windows' state.

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "limit_windows",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("window", sa.String(200), nullable=False),
        sa.Column("until_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "window", name="pk_limit_windows"),
    )


def downgrade() -> None:
    op.drop_table("limit_windows")
