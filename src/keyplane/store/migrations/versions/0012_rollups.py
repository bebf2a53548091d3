"""Analytics rollups (usage and verify outcomes) and the usage report's feature.

Revision ID: 0012_rollups
Revises: 0011_webhooks
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import UTCDateTime

revision = "0012_rollups"
down_revision = "0011_webhooks"
branch_labels = None
depends_on = None

# Spelled out rather than imported: a migration must not change when the code does.
_MEASURES = (
    "requests",
    "errors",
    "cost_micros",
    "input_tokens",
    "output_tokens",
    "latency_count",
    "latency_sum_ms",
    *(f"latency_h{index}" for index in range(12)),
)


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("feature", sa.String(64), nullable=True))
    op.create_index("ix_usage_events_recorded_at", "usage_events", ["recorded_at"])
    op.create_table(
        "usage_analytics",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("grain", sa.String(8), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("dimension", sa.String(8), nullable=False),
        sa.Column("value", sa.String(128), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _MEASURES),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_usage_analytics_key_id_api_keys"
        ),
        sa.PrimaryKeyConstraint(
            "key_id", "grain", "bucket_start", "dimension", "value", name="pk_usage_analytics"
        ),
    )
    op.create_index("ix_usage_analytics_grain_bucket", "usage_analytics", ["grain", "bucket_start"])
    op.create_table(
        "verify_analytics",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("grain", sa.String(8), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_verify_analytics_key_id_api_keys"
        ),
        sa.PrimaryKeyConstraint(
            "key_id", "grain", "bucket_start", "code", name="pk_verify_analytics"
        ),
    )
    op.create_index(
        "ix_verify_analytics_grain_bucket", "verify_analytics", ["grain", "bucket_start"]
    )


def downgrade() -> None:
    op.drop_index("ix_verify_analytics_grain_bucket", table_name="verify_analytics")
    op.drop_table("verify_analytics")
    op.drop_index("ix_usage_analytics_grain_bucket", table_name="usage_analytics")
    op.drop_table("usage_analytics")
    op.drop_index("ix_usage_events_recorded_at", table_name="usage_events")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("feature")
