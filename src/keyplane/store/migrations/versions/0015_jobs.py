"""Scheduled jobs, key rotation policies, and rotation secrets held for a claim.

Revision ID: 0015_jobs
Revises: 0014_signing_secrets
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import JsonType, UTCDateTime

revision = "0015_jobs"
down_revision = "0014_signing_secrets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("schedule", sa.String(200)),
        sa.Column("interval_seconds", sa.Integer()),
        sa.Column("next_run_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_started_at", UTCDateTime()),
        sa.Column("last_finished_at", UTCDateTime()),
        sa.Column("last_outcome", sa.String(20)),
        sa.Column("last_error", sa.String(200)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_jobs"),
    )
    op.create_index("ix_jobs_next_run_at", "jobs", ["next_run_at"])
    op.create_table(
        "key_rotation_policies",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("policy", JsonType, nullable=False),
        sa.Column("next_rotation_at", UTCDateTime()),
        sa.Column("last_rotated_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_key_rotation_policies"),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_key_rotation_policies_key_id_api_keys"
        ),
    )
    op.create_index(
        "ix_key_rotation_policies_next_rotation_at",
        "key_rotation_policies",
        ["next_rotation_at"],
    )
    op.create_table(
        "held_rotation_secrets",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("sealed_secret", sa.Text()),
        sa.Column("new_hash", sa.String(128), nullable=False),
        sa.Column("old_hash", sa.String(128), nullable=False),
        sa.Column("self_claim", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("rotated_at", UTCDateTime(), nullable=False),
        sa.Column("old_valid_until", UTCDateTime(), nullable=False),
        sa.Column("claim_until", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("key_id", name="pk_held_rotation_secrets"),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_held_rotation_secrets_key_id_api_keys"
        ),
    )
    op.create_index(
        "ix_held_rotation_secrets_state", "held_rotation_secrets", ["state", "claim_until"]
    )
    op.create_index("ix_held_rotation_secrets_old_hash", "held_rotation_secrets", ["old_hash"])


def downgrade() -> None:
    op.drop_index("ix_held_rotation_secrets_old_hash", table_name="held_rotation_secrets")
    op.drop_index("ix_held_rotation_secrets_state", table_name="held_rotation_secrets")
    op.drop_table("held_rotation_secrets")
    op.drop_index("ix_key_rotation_policies_next_rotation_at", table_name="key_rotation_policies")
    op.drop_table("key_rotation_policies")
    op.drop_index("ix_jobs_next_run_at", table_name="jobs")
    op.drop_table("jobs")
