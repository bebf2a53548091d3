"""Initial schema: organizations, projects, API keys, their secrets and tags, management keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import JsonType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_projects_org_id_organizations"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
    )
    op.create_index("ix_projects_org_name", "projects", ["org_id", "name"], unique=True)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("start", sa.String(40), nullable=False),
        sa.Column("end", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("label", sa.String(200)),
        sa.Column("description", sa.Text()),
        sa.Column("owner", sa.String(200)),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("tags", JsonType, nullable=False),
        sa.Column("metadata", JsonType, nullable=False),
        sa.Column("scopes", JsonType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("disabled_reason", sa.String(500)),
        sa.Column("auto_enable_at", UTCDateTime()),
        sa.Column("revoked_reason", sa.String(500)),
        sa.Column("revoked_at", UTCDateTime()),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime()),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_api_keys_org_id_organizations"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_api_keys_project_id_projects"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("hash", name="uq_api_keys_hash"),
    )
    op.create_index("ix_api_keys_org_id_id", "api_keys", ["org_id", "id"])
    op.create_index("ix_api_keys_org_owner", "api_keys", ["org_id", "owner"])
    op.create_table(
        "api_key_tags",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("tag", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], ondelete="CASCADE", name="fk_api_key_tags_key_id_api_keys"
        ),
        sa.PrimaryKeyConstraint("key_id", "tag", name="pk_api_key_tags"),
    )
    op.create_index("ix_api_key_tags_tag", "api_key_tags", ["tag"])
    op.create_table(
        "api_key_secrets",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("valid_until", UTCDateTime()),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            ondelete="CASCADE",
            name="fk_api_key_secrets_key_id_api_keys",
        ),
        sa.PrimaryKeyConstraint("hash", name="pk_api_key_secrets"),
    )
    op.create_index("ix_api_key_secrets_key_id", "api_key_secrets", ["key_id"])
    op.create_table(
        "management_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40)),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("start", sa.String(40), nullable=False),
        sa.Column("end", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", JsonType, nullable=False),
        sa.Column("created_by", sa.String(40)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
        sa.Column("last_used_at", UTCDateTime()),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_management_keys_org_id_organizations"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_management_keys_project_id_projects"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_management_keys"),
        sa.UniqueConstraint("hash", name="uq_management_keys_hash"),
    )
    op.create_index("ix_management_keys_org_id_id", "management_keys", ["org_id", "id"])


def downgrade() -> None:
    for table in (
        "management_keys",
        "api_key_secrets",
        "api_key_tags",
        "api_keys",
        "projects",
        "organizations",
    ):
        op.drop_table(table)
