"""Usage idempotency keys are unique per API key, not per organization.

Per organization, one project's report could take a request id another project then needed
(its report was refused with 409 and never recorded) and learn which ids others used. Rows
unique per (org, idempotency key) are unique per (key, idempotency key) too, so the new index
always builds.

Revision ID: 0007
Revises: 0006 (the lead re-chains the branches' migrations when merging)
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_usage_events_key_idempotency",
        "usage_events",
        ["key_id", "idempotency_key"],
        unique=True,
    )
    op.drop_index("ix_usage_events_org_idempotency", table_name="usage_events")


def downgrade() -> None:
    # Fails if two keys of an organization have since used the same idempotency key.
    op.create_index(
        "ix_usage_events_org_idempotency",
        "usage_events",
        ["org_id", "idempotency_key"],
        unique=True,
    )
    op.drop_index("ix_usage_events_key_idempotency", table_name="usage_events")
