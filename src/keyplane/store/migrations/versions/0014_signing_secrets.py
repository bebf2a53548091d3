"""Owners' webhook signing secrets, sealed.

Revision ID: 0014_signing_secrets
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import UTCDateTime

revision = "0014_signing_secrets"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_secrets",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40)),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("sealed_secret", sa.Text(), nullable=False),
        sa.Column("previous_sealed_secret", sa.Text()),
        sa.Column("previous_expires_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("rotated_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_signing_secrets"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_signing_secrets_org_id_organizations"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_signing_secrets_project_id_projects"
        ),
    )
    op.create_index("ix_signing_secrets_org_id_owner", "signing_secrets", ["org_id", "owner"])


def downgrade() -> None:
    op.drop_index("ix_signing_secrets_org_id_owner", table_name="signing_secrets")
    op.drop_table("signing_secrets")
