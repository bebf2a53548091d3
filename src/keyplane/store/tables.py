"""The relational schema (SQLAlchemy Core). Migrations in ``migrations/versions`` create it."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from keyplane.store.types import JsonType, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("key_prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_projects_org_name", "org_id", "name", unique=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False),
    # hash of the *current* secret: the compatibility identifier clients address keys by.
    Column("hash", String(64), nullable=False, unique=True),
    Column("start", String(40), nullable=False),
    Column("end", String(8), nullable=False),
    Column("name", String(200), nullable=False),
    Column("label", String(200)),
    Column("description", Text),
    Column("owner", String(200)),
    Column("environment", String(8), nullable=False),
    Column("tags", JsonType, nullable=False),
    Column("metadata", JsonType, nullable=False, key="meta"),
    Column("scopes", JsonType, nullable=False),
    Column("status", String(16), nullable=False),
    Column("disabled_reason", String(500)),
    Column("auto_enable_at", UTCDateTime()),
    Column("revoked_reason", String(500)),
    Column("revoked_at", UTCDateTime()),
    Column("expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime()),
    Index("ix_api_keys_org_id_id", "org_id", "id"),
    Index("ix_api_keys_org_owner", "org_id", "owner"),
)

# Tags live in their own table as well as on the key, so "keys with tag X" is an indexed lookup
# that reads the same on every database.
api_key_tags = Table(
    "api_key_tags",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(100), nullable=False),
    PrimaryKeyConstraint("key_id", "tag"),
    Index("ix_api_key_tags_tag", "tag"),
)

# Every secret a key has had and that may still verify: the current one (valid_until NULL) and
# rotated-out ones inside their grace period. verify looks secrets up here by hash.
api_key_secrets = Table(
    "api_key_secrets",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("valid_until", UTCDateTime()),
    Index("ix_api_key_secrets_key_id", "key_id"),
)

management_keys = Table(
    "management_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("project_id", String(40), ForeignKey("projects.id")),
    Column("hash", String(64), nullable=False, unique=True),
    Column("start", String(40), nullable=False),
    Column("end", String(8), nullable=False),
    Column("name", String(200), nullable=False),
    Column("scopes", JsonType, nullable=False),
    Column("created_by", String(40)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("last_used_at", UTCDateTime()),
    Index("ix_management_keys_org_id_id", "org_id", "id"),
)
