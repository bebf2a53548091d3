"""Request-signing secrets of API keys, sealed, beside each key secret.

Revision ID: 0018_request_signing
Revises: 0017_credit_adjustments
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_request_signing"
down_revision = "0017_credit_adjustments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_key_secrets", sa.Column("sealed_signing_secret", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("api_key_secrets") as batch:
        batch.drop_column("sealed_signing_secret")
