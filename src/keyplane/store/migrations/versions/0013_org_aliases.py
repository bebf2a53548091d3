"""Organization aliases: external ids (FastRouter's ``org_id``) that name an organization.

Revision ID: 0013_org_aliases
Revises: 0012_rollups
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import UTCDateTime

revision = "0013_org_aliases"
down_revision = "0012_rollups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organization_aliases",
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name="fk_organization_aliases_org_id_organizations",
        ),
        sa.PrimaryKeyConstraint("alias", name="pk_organization_aliases"),
    )
    op.create_index("ix_organization_aliases_org_id", "organization_aliases", ["org_id"])


def downgrade() -> None:
    op.drop_index("ix_organization_aliases_org_id", table_name="organization_aliases")
    op.drop_table("organization_aliases")
