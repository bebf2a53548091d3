"""Key approval: who created a key, so a different management key must approve a pending one.

The ``pending`` status itself needs no change (``status`` is a free string column).

Revision ID: 0019_key_approval
Revises: 0018_request_signing
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_key_approval"
down_revision = "0018_request_signing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("created_by")
