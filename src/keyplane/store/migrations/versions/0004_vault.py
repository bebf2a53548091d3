"""The upstream credential vault: sealed credentials and their live leases.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import JsonType, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vault_credentials",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("sealed_secret", sa.Text(), nullable=False),
        sa.Column("master_key_id", sa.String(16), nullable=False),
        sa.Column("secret_hint", sa.String(16), nullable=False),
        sa.Column("environment", sa.String(32)),
        sa.Column("tags", JsonType, nullable=False),
        sa.Column("metadata", JsonType, nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("daily_limit", sa.BigInteger()),
        sa.Column("monthly_limit", sa.BigInteger()),
        sa.Column("max_concurrent", sa.Integer()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.String(500)),
        sa.Column("cooldown_until", UTCDateTime()),
        sa.Column("day_start", UTCDateTime()),
        sa.Column("day_count", sa.BigInteger(), nullable=False),
        sa.Column("month_start", UTCDateTime()),
        sa.Column("month_count", sa.BigInteger(), nullable=False),
        sa.Column("total_count", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_vault_credentials_org_id_organizations"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vault_credentials"),
    )
    op.create_index(
        "ix_vault_credentials_org_provider", "vault_credentials", ["org_id", "provider"]
    )
    op.create_index("ix_vault_credentials_org_alias", "vault_credentials", ["org_id", "alias"])
    op.create_index("ix_vault_credentials_master_key_id", "vault_credentials", ["master_key_id"])
    op.create_table(
        "vault_leases",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("credential_id", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_vault_leases_org_id_organizations"
        ),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["vault_credentials.id"],
            name="fk_vault_leases_credential_id_vault_credentials",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vault_leases"),
    )
    op.create_index(
        "ix_vault_leases_credential_expires", "vault_leases", ["credential_id", "expires_at"]
    )


def downgrade() -> None:
    op.drop_table("vault_leases")
    op.drop_table("vault_credentials")
