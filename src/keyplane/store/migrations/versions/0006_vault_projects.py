"""Vault credentials belong to a project or to the whole organization.

``project_id`` NULL keeps every existing credential org-wide, and ``shared_with_projects``
false keeps it out of project-bound keys' reach (the security fix: before, they reached all).

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with a foreign key in place (its default is NULL); a batch
        # copy of the table would instead drop the old one, which with foreign keys on
        # cascades to every live lease.
        op.execute(
            "ALTER TABLE vault_credentials ADD COLUMN project_id VARCHAR(40) "
            "CONSTRAINT fk_vault_credentials_project_id_projects REFERENCES projects (id)"
        )
    else:
        op.add_column("vault_credentials", sa.Column("project_id", sa.String(40)))
        op.create_foreign_key(
            "fk_vault_credentials_project_id_projects",
            "vault_credentials",
            "projects",
            ["project_id"],
            ["id"],
        )
    op.add_column(
        "vault_credentials",
        sa.Column("shared_with_projects", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_vault_credentials_org_project", "vault_credentials", ["org_id", "project_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_vault_credentials_org_project", table_name="vault_credentials")
    op.drop_column("vault_credentials", "shared_with_projects")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(
            "fk_vault_credentials_project_id_projects", "vault_credentials", type_="foreignkey"
        )
        op.drop_column("vault_credentials", "project_id")
    # SQLite refuses to drop a column with a foreign key: project_id stays there, unused.
