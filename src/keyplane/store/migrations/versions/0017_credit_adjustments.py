"""Credit adjustments of key budgets (issue 15).

Revision ID: 0017_credit_adjustments
Revises: 0016_leak_response
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import UTCDateTime

revision = "0017_credit_adjustments"
down_revision = "0016_leak_response"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_adjustments",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_adjustments"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_credit_adjustments_org_id_organizations"
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_credit_adjustments_key_id_api_keys"
        ),
    )
    op.create_index(
        "ix_credit_adjustments_key_id_created_at",
        "credit_adjustments",
        ["key_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_credit_adjustments_key_id_created_at", table_name="credit_adjustments")
    op.drop_table("credit_adjustments")
