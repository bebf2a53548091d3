"""Rotation policies on a plan: the plan's policy, and which key schedules inherit it.

A key on a plan with a rotation policy gets a row in ``key_rotation_policies`` marked with
``from_plan`` (the plan's id), so the sweep stays an indexed read of ``next_rotation_at``.

Revision ID: 0020_plan_rotation
Revises: 0019_key_approval
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import JsonType, UTCDateTime

revision = "0020_plan_rotation"
down_revision = "0019_key_approval"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plan_rotation_policies",
        sa.Column("plan_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("policy", JsonType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", name="pk_plan_rotation_policies"),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name="fk_plan_rotation_policies_plan_id_plans"
        ),
    )
    with op.batch_alter_table("key_rotation_policies") as batch:
        batch.add_column(sa.Column("from_plan", sa.String(40), nullable=True))
        batch.create_index("ix_key_rotation_policies_from_plan", ["from_plan"])


def downgrade() -> None:
    with op.batch_alter_table("key_rotation_policies") as batch:
        batch.drop_index("ix_key_rotation_policies_from_plan")
        batch.drop_column("from_plan")
    op.drop_table("plan_rotation_policies")
