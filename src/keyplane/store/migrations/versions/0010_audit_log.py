"""The audit log: a hash chain per organization, its heads, and retention checkpoints.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import JsonType, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("project_id", sa.String(40)),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("actor_id", sa.String(64)),
        sa.Column("actor_name", sa.String(200)),
        sa.Column("actor_ip", sa.String(64)),
        sa.Column("actor_user_agent", sa.String(512)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", JsonType, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "seq", name="pk_audit_log"),
        sa.UniqueConstraint("id", name="uq_audit_log_id"),
    )
    op.create_index("ix_audit_log_org_id_occurred_at", "audit_log", ["org_id", "occurred_at"])
    op.create_index(
        "ix_audit_log_org_id_target_id_seq", "audit_log", ["org_id", "target_id", "seq"]
    )
    op.create_index("ix_audit_log_org_id_action_seq", "audit_log", ["org_id", "action", "seq"])
    op.create_index("ix_audit_log_org_id_actor_id_seq", "audit_log", ["org_id", "actor_id", "seq"])
    op.create_table(
        "audit_heads",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_audit_heads"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("pruned_at", UTCDateTime(), nullable=False),
        sa.Column("entries_pruned", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "seq", name="pk_audit_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_heads")
    op.drop_index("ix_audit_log_org_id_actor_id_seq", table_name="audit_log")
    op.drop_index("ix_audit_log_org_id_action_seq", table_name="audit_log")
    op.drop_index("ix_audit_log_org_id_target_id_seq", table_name="audit_log")
    op.drop_index("ix_audit_log_org_id_occurred_at", table_name="audit_log")
    op.drop_table("audit_log")
