"""Policies, plans, the usage ledger with its rollups, and events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import JsonType, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("policy", JsonType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_plans_org_id_organizations"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
    )
    op.create_index("ix_plans_org_name", "plans", ["org_id", "name"], unique=True)
    # batch mode: SQLite cannot add a foreign key to an existing table in place.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("plan_id", sa.String(40)))
        batch.add_column(sa.Column("policy", JsonType, nullable=False, server_default="{}"))
        batch.create_foreign_key("fk_api_keys_plan_id_plans", "plans", ["plan_id"], ["id"])
        batch.create_index("ix_api_keys_plan_id", ["plan_id"])
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("policy", server_default=None)
    op.create_table(
        "usage_events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(255)),
        sa.Column("model", sa.String(128)),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Integer()),
        sa.Column("status", sa.Integer()),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_usage_events_org_id_organizations"
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_usage_events_key_id_api_keys"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_usage_events"),
    )
    op.create_index(
        "ix_usage_events_org_idempotency",
        "usage_events",
        ["org_id", "idempotency_key"],
        unique=True,
    )
    op.create_index("ix_usage_events_key_recorded", "usage_events", ["key_id", "recorded_at"])
    op.create_table(
        "usage_rollups",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("bucket", sa.String(8), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_usage_rollups_key_id_api_keys"
        ),
        sa.PrimaryKeyConstraint(
            "key_id", "bucket", "bucket_start", "model", name="pk_usage_rollups"
        ),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("payload", JsonType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_events_org_id_organizations"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("dedupe_key", name="uq_events_dedupe_key"),
    )
    op.create_index("ix_events_org_id_id", "events", ["org_id", "id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("usage_rollups")
    op.drop_table("usage_events")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_plan_id")
        batch.drop_constraint("fk_api_keys_plan_id_plans", type_="foreignkey")
        batch.drop_column("policy")
        batch.drop_column("plan_id")
    op.drop_index("ix_plans_org_name", table_name="plans")
    op.drop_table("plans")
