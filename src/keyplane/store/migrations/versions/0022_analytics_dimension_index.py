"""An index on usage rollups by dimension before bucket, for one key's analytics.

``GET /v1/keys/{id}/analytics`` reads a key's totals (dimension ``""``) over a window, then its
model and feature rows. With only the primary key (key, grain, bucket, dimension, value) each
read walks every dimension's rows of the window: 26 rows per hour for 20 models and 5 features,
to keep one. Dimension before bucket makes each read one contiguous range of the rows it keeps.

Revision ID: 0022_analytics_dimension_index
Revises: 0021_key_metadata_index
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0022_analytics_dimension_index"
down_revision = "0021_key_metadata_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_usage_analytics_key_dimension",
        "usage_analytics",
        ["key_id", "grain", "dimension", "bucket_start"],
    )


def downgrade() -> None:
    op.drop_index("ix_usage_analytics_key_dimension", table_name="usage_analytics")
