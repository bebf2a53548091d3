"""Leak response: each project's action for a key reported leaked.

Revision ID: 0016_leak_response
Revises: 0015_jobs
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.types import UTCDateTime

revision = "0016_leak_response"
down_revision = "0015_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_leak_responses",
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", name="pk_project_leak_responses"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_project_leak_responses_project_id_projects",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name="fk_project_leak_responses_org_id_organizations",
        ),
    )


def downgrade() -> None:
    op.drop_table("project_leak_responses")
