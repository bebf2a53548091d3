"""Sealed replay secrets on idempotency records; a default project for every organization.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from keyplane.domain import ids
from keyplane.domain.keyformat import DEFAULT_PREFIX
from keyplane.store.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_organizations = sa.table(
    "organizations", sa.column("id", sa.String(40)), sa.column("created_at", UTCDateTime())
)
_projects = sa.table(
    "projects",
    sa.column("id", sa.String(40)),
    sa.column("org_id", sa.String(40)),
    sa.column("name", sa.String(200)),
    sa.column("key_prefix", sa.String(16)),
    sa.column("created_at", UTCDateTime()),
)


def upgrade() -> None:
    # Records made before this revision hold no secret (it was derived, not stored): a
    # retry of those is refused as expired, which is what "shown once" asks.
    op.add_column("idempotency_records", sa.Column("sealed_secret", sa.Text()))
    op.create_index("ix_idempotency_records_sealed_created", "idempotency_records", ["created_at"])
    # Every organization gets its own default project, so a key created without one never
    # lands in another organization's.
    bind = op.get_bind()
    has_default = sa.select(_projects.c.id).where(
        _projects.c.org_id == _organizations.c.id, _projects.c.name == "default"
    )
    orphans = bind.execute(sa.select(_organizations.c.id).where(~has_default.exists())).all()
    now = datetime.now(UTC)
    for (org_id,) in orphans:
        bind.execute(
            sa.insert(_projects).values(
                id=ids.new_id("proj"),
                org_id=org_id,
                name="default",
                key_prefix=DEFAULT_PREFIX,
                created_at=now,
            )
        )


def downgrade() -> None:
    # The default projects stay: keys may live in them by now.
    op.drop_index("ix_idempotency_records_sealed_created", table_name="idempotency_records")
    with op.batch_alter_table("idempotency_records") as batch:
        batch.drop_column("sealed_secret")
