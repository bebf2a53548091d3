"""The relational schema (SQLAlchemy Core). Migrations in ``migrations/versions`` create it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
)

from keyplane.domain import analytics
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

#: External ids of an organization (a FastRouter org id, say) that requests may name it by
#: (``org_id`` on ``/prod``). One alias names one organization in the whole deployment.
organization_aliases = Table(
    "organization_aliases",
    metadata,
    Column("alias", String(200), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_organization_aliases_org_id", "org_id"),
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
    Column("plan_id", String(40), ForeignKey("plans.id")),
    # The key's own policy: overrides merged over its plan's (storage form, see domain.policy).
    Column("policy", JsonType, nullable=False),
    # The management key that created it: a pending key needs another one's approval.
    Column("created_by", String(64)),
    Index("ix_api_keys_org_id_id", "org_id", "id"),
    Index("ix_api_keys_plan_id", "plan_id"),
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

# The metadata index (store/key_metadata.py): one row per scalar metadata value a filter can
# reach, its text as a digest, written with the key, so a metadata filter is an indexed lookup.
api_key_metadata = Table(
    "api_key_metadata",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("org_id", String(40), nullable=False),
    Column("path", String(600), nullable=False),
    Column("value_digest", String(64), nullable=False),
    PrimaryKeyConstraint("key_id", "path"),
    Index("ix_api_key_metadata_lookup", "org_id", "path", "value_digest", "key_id"),
    # On SQLite the rows live in the primary key's b-tree: a probe by (key_id, path) is one seek.
    sqlite_with_rowid=False,
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
    # The request-signing secret issued with this key secret, sealed (domain/sealing.py).
    Column("sealed_signing_secret", Text),
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

# Named policy templates. A key on a plan follows every change to it.
plans = Table(
    "plans",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("description", Text),
    Column("policy", JsonType, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_plans_org_name", "org_id", "name", unique=True),
)

# The usage ledger: one row per accepted usage report, never updated. The idempotency key is
# unique per API key: a retried report (it names the same key) can never be counted twice, and
# tenants (projects) that happen to pick the same request ids never collide or learn of each
# other's reports.
usage_events = Table(
    "usage_events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    # SHA-256 of the canonical report: a reused idempotency key with another body is refused.
    Column("fingerprint", String(64), nullable=False),
    Column("request_id", String(255)),
    Column("model", String(128)),
    Column("cost_micros", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("latency_ms", Integer),
    Column("status", Integer),
    Column("recorded_at", UTCDateTime(), nullable=False),
    # The feature a request used (seed 004's free strings), for the analytics breakdown.
    Column("feature", String(64)),
    Index("ix_usage_events_key_idempotency", "key_id", "idempotency_key", unique=True),
    Index("ix_usage_events_key_recorded", "key_id", "recorded_at"),
    # For the retention pruning (KEYPLANE_USAGE_EVENT_RETENTION_DAYS), across all keys.
    Index("ix_usage_events_recorded_at", "recorded_at"),
)

# Per-key totals by calendar bucket, updated in the same transaction as the ledger rows they
# sum. A new day, week or month is a new row, so a reset is exact and needs no job. ``model``
# is "" for the total over all models.
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("bucket", String(8), nullable=False),
    Column("bucket_start", UTCDateTime(), nullable=False),
    Column("model", String(128), nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    PrimaryKeyConstraint("key_id", "bucket", "bucket_start", "model"),
)

# Analytics rollups (keyplane.domain.analytics): per key, grain (minute, hour, day), bucket
# start, dimension ("" for the totals, "model", "feature") and value, the sums of the usage
# reports in the bucket. Written by folding the pending rows below (store/analytics.py) with
# upserts that add, so folds and instances add up. Every column is a sum.
usage_analytics = Table(
    "usage_analytics",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("grain", String(8), nullable=False),
    Column("bucket_start", UTCDateTime(), nullable=False),
    Column("dimension", String(8), nullable=False),
    Column("value", String(128), nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in analytics.MEASURES),
    PrimaryKeyConstraint("key_id", "grain", "bucket_start", "dimension", "value"),
    # Pruning by age, and org-wide queries over a window.
    Index("ix_usage_analytics_grain_bucket", "grain", "bucket_start"),
    # One key's analytics: its totals, or its breakdown rows, over a window are one range
    # (the primary key would walk every dimension's rows of each bucket).
    Index("ix_usage_analytics_key_dimension", "key_id", "grain", "dimension", "bucket_start"),
)

# Usage the ledger has recorded and the rollups have not counted yet: each group commit adds
# one row (its reports summed per key, minute, model and feature, as JSON) in the ledger's
# transaction; folding deletes rows and adds them to ``usage_analytics`` in one transaction
# (store/analytics.py). So a report reaches the rollups exactly once, and the commit every
# report waits for writes one row, not one per rollup row.
usage_analytics_pending = Table(
    "usage_analytics_pending",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("cells", Text, nullable=False),
)

# Verify outcomes per key, grain, bucket start and verdict code, flushed from memory every few
# seconds (services/analytics.py): the verify path itself writes nothing.
verify_analytics = Table(
    "verify_analytics",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("grain", String(8), nullable=False),
    Column("bucket_start", UTCDateTime(), nullable=False),
    Column("code", String(32), nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint("key_id", "grain", "bucket_start", "code"),
    Index("ix_verify_analytics_grain_bucket", "grain", "bucket_start"),
)

# Things that happened and that webhooks will deliver (an outbox). ``dedupe_key`` makes
# recording an event idempotent: a budget threshold is crossed once per period.
events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("subject_id", String(40), nullable=False),
    Column("dedupe_key", String(255), nullable=False, unique=True),
    Column("payload", JsonType, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_events_org_id_id", "org_id", "id"),
)

# Idempotent POSTs: which object a (caller, Idempotency-Key) already made, and a fingerprint of
# the request that made it, so a retry gets the same object back and a reused key with another
# body is refused. ``sealed_secret`` is the created key's plaintext sealed with AES-GCM
# (keyplane.domain.sealing), kept only for the replay window and then erased (NULL); the row
# itself stays, so a late retry is refused instead of making a second key.
idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("principal_id", String(40), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("object_id", String(40), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("sealed_secret", Text),
    PrimaryKeyConstraint("org_id", "principal_id", "idempotency_key"),
    Index("ix_idempotency_records_sealed_created", "created_at"),
)

# The operator's upstream provider credentials. ``sealed_secret`` is an envelope token
# (keyplane.domain.envelope) bound to (org_id, id); ``master_key_id`` names the master key
# that wrapped it, so a master-key rotation finds the rows still to re-wrap by index. Usage
# counters keep the start of the period they count: an older period reads as 0.
vault_credentials = Table(
    "vault_credentials",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("provider", String(40), nullable=False),
    Column("alias", String(200), nullable=False),
    # The project the credential belongs to; NULL: the organization's (org-wide). A
    # project-bound management key reaches its project's credentials, and org-wide ones only
    # when ``shared_with_projects`` is true (docs/vault.md).
    Column("project_id", String(40), ForeignKey("projects.id")),
    Column("shared_with_projects", Boolean, nullable=False, server_default=false()),
    Column("sealed_secret", Text, nullable=False),
    Column("master_key_id", String(16), nullable=False),
    Column("secret_hint", String(16), nullable=False),
    Column("environment", String(32)),
    Column("tags", JsonType, nullable=False),
    Column("metadata", JsonType, nullable=False, key="meta"),
    Column("weight", Integer, nullable=False),
    Column("daily_limit", BigInteger),
    Column("monthly_limit", BigInteger),
    Column("max_concurrent", Integer),
    Column("status", String(16), nullable=False),
    Column("status_reason", String(500)),
    Column("cooldown_until", UTCDateTime()),
    Column("day_start", UTCDateTime()),
    Column("day_count", BigInteger, nullable=False),
    Column("month_start", UTCDateTime()),
    Column("month_count", BigInteger, nullable=False),
    Column("total_count", BigInteger, nullable=False),
    Column("last_used_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Index("ix_vault_credentials_org_provider", "org_id", "provider"),
    Index("ix_vault_credentials_org_alias", "org_id", "alias"),
    Index("ix_vault_credentials_org_project", "org_id", "project_id"),
    Index("ix_vault_credentials_master_key_id", "master_key_id"),
)

# Live leases. A row is deleted when its lease is released; one whose ``expires_at`` has
# passed no longer counts against the credential's concurrency, so an abandoned lease frees
# its slot with no sweeper (the next lease of that credential deletes it).
vault_leases = Table(
    "vault_leases",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column(
        "credential_id",
        String(40),
        ForeignKey("vault_credentials.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index("ix_vault_leases_credential_expires", "credential_id", "expires_at"),
)

# What must outlive Redis of a key's limits (keyplane.limits.markers).
# ``window`` "" is the key's marker: Redis keeps it until ``until_us`` (on the limiter script's
# clock, microseconds), and every long window and concurrency slot of the key fits inside it,
# so a Redis that lost its data is told apart from one that never had any. Any other
# ``window`` names a long window ("<kind>:<name>:<limit>:<period us>") and ``until_us`` when it
# is full again, written in batches for KEYPLANE_LIMITS_AFTER_REDIS_LOSS=reseed. No foreign
# key: the rows are written from verify's path; a deleted key's rows are inert.
limit_windows = Table(
    "limit_windows",
    metadata,
    Column("key_id", String(40), nullable=False),
    Column("window", String(200), nullable=False),
    Column("until_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("key_id", "window"),
)

# The instance registry when there is no Redis (PostgreSQL only; see services.instances):
# each instance's last heartbeat, by the database's clock, and which instances acknowledged
# applying an eviction a confirmed revoke waits on. Both are pruned by the heartbeats.
instances = Table(
    "instances",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("last_seen", UTCDateTime(), nullable=False),
)

eviction_acks = Table(
    "eviction_acks",
    metadata,
    Column("eviction_id", String(40), nullable=False),
    Column("instance_id", String(64), nullable=False),
    Column("acked_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("eviction_id", "instance_id"),
    Index("ix_eviction_acks_acked_at", "acked_at"),
)

# The audit log: one hash chain per organization. ``seq`` is the entry's place in its org's
# chain (1, 2, ...), ``hash`` covers the entry's content and ``prev_hash`` (the hash of entry
# ``seq - 1``, or of the last pruned entry's checkpoint). Entries are written in the
# transaction of the change they record (``store/unit.py`` journal writers) and never updated.
audit_log = Table(
    "audit_log",
    metadata,
    Column("org_id", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("id", String(40), nullable=False, unique=True),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("project_id", String(40)),
    Column("actor_type", String(20), nullable=False),
    Column("actor_id", String(64)),
    Column("actor_name", String(200)),
    Column("actor_ip", String(64)),
    Column("actor_user_agent", String(512)),
    Column("request_id", String(128)),
    Column("action", String(64), nullable=False),
    Column("target_type", String(32), nullable=False),
    Column("target_id", String(64)),
    Column("outcome", String(16), nullable=False),
    Column("details", JsonType, nullable=False),
    Column("count", Integer, nullable=False, server_default="1"),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    PrimaryKeyConstraint("org_id", "seq", name="pk_audit_log"),
    Index("ix_audit_log_org_id_occurred_at", "org_id", "occurred_at"),
    Index("ix_audit_log_org_id_target_id_seq", "org_id", "target_id", "seq"),
    Index("ix_audit_log_org_id_action_seq", "org_id", "action", "seq"),
    Index("ix_audit_log_org_id_actor_id_seq", "org_id", "actor_id", "seq"),
)

# The head of each organization's chain: locked by every writer of that org, so concurrent
# writers on any number of instances append one after another and never fork the chain.
audit_heads = Table(
    "audit_heads",
    metadata,
    Column("org_id", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# What retention pruned: the last pruned entry of an org and its hash, so the chain that
# remains still verifies from there.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("org_id", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("pruned_at", UTCDateTime(), nullable=False),
    Column("entries_pruned", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "seq", name="pk_audit_checkpoints"),
)

# Owners' webhook signing secrets (``/v1/signing-secrets``), sealed with a key derived from the
# server secret; the previous one keeps signing until ``previous_expires_at`` after a rotation.
signing_secrets = Table(
    "signing_secrets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("project_id", String(40), ForeignKey("projects.id")),
    Column("owner", String(200), nullable=False),
    Column("description", Text),
    Column("sealed_secret", Text, nullable=False),
    Column("previous_sealed_secret", Text),
    Column("previous_expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("rotated_at", UTCDateTime()),
    Index("ix_signing_secrets_org_id_owner", "org_id", "owner"),
)

# Webhook endpoints (and email channels): where events of an organization (or one of its
# projects) are sent. The signing secret is stored sealed (domain/webhook_secrets.py); during a
# rotation's overlap the previous one signs too, until previous_until.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("project_id", String(40), ForeignKey("projects.id")),
    Column("kind", String(16), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("description", String(500)),
    Column("events", JsonType, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("sealed_secret", Text, nullable=False),
    Column("previous_sealed_secret", Text),
    Column("previous_until", UTCDateTime()),
    # When the endpoint started failing without a success since (None: healthy).
    Column("failing_since", UTCDateTime()),
    Column("disabled_reason", String(200)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The outbox reads the enabled endpoints of an organization in every journalled write.
    Index("ix_webhook_endpoints_org_id_enabled", "org_id", "enabled"),
)

# The outbox: one row per event and endpoint, written in the transaction of the change. Workers
# claim due rows (next_attempt_at <= now) by pushing next_attempt_at past a lease, so a
# delivery whose worker died is claimed again once the lease runs out.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    # No foreign key: its check (a locking read of the endpoint row) would be paid by every
    # journalled change with a subscriber; deleting an endpoint deletes its deliveries.
    Column("endpoint_id", String(40), nullable=False),
    Column("org_id", String(40), nullable=False),
    # The webhook-id header: the same on every attempt and replay of this event.
    Column("event_id", String(40), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("next_attempt_at", UTCDateTime()),
    Column("delivered_at", UTCDateTime()),
    Column("last_status_code", Integer),
    Column("last_error", String(200)),
    Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
)

# Every attempt of a delivery, for the delivery log.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "delivery_id",
        String(40),
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("number", Integer, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer, nullable=False),
    Column("error", String(200)),
    Column("next_attempt_at", UTCDateTime()),
    PrimaryKeyConstraint("delivery_id", "number", name="pk_webhook_attempts"),
)

# Notices sent once per subject (key.expiring once per key and N days).
webhook_notices = Table(
    "webhook_notices",
    metadata,
    Column("subject", String(120), primary_key=True),
    Column("sent_at", UTCDateTime(), nullable=False),
)

# Credit adjustments (``POST /v1/keys/{id}/credits``): the ledger of what an operator granted
# (positive: more to spend) or charged (negative) a key's budget, with why. Each is also
# applied to the key's all-models rows of ``usage_rollups`` (as a spend of minus the amount)
# in the same transaction, so budgets, seeds and alerts see it exactly like a report.
credit_adjustments = Table(
    "credit_adjustments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_credit_adjustments_key_id_created_at", "key_id", "created_at"),
)

# Durable scheduled jobs (services/jobs.py): one row per job, claimed by an instance for a
# lease; a run whose lease expired (the instance crashed) is claimable again.
jobs = Table(
    "jobs",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("kind", String(100), nullable=False),
    Column("schedule", String(200)),
    Column("interval_seconds", Integer),
    Column("next_run_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime()),
    Column("claimed_by", String(200)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_started_at", UTCDateTime()),
    Column("last_finished_at", UTCDateTime()),
    Column("last_outcome", String(20)),
    Column("last_error", String(200)),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_jobs_next_run_at", "next_run_at"),
)

# A key's rotation policy (``POST /v1/keys/{id}/rotation``) and when it is next due: the
# rotation sweep reads the index on next_rotation_at, never every key's policy.
key_rotation_policies = Table(
    "key_rotation_policies",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id"), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("policy", JsonType, nullable=False),
    Column("next_rotation_at", UTCDateTime()),
    Column("last_rotated_at", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The plan whose policy this row inherits (kept in step with the plan's policy and the
    # key's plan); NULL for the key's own policy, which wins over its plan's.
    Column("from_plan", String(40)),
    Index("ix_key_rotation_policies_next_rotation_at", "next_rotation_at"),
    Index("ix_key_rotation_policies_from_plan", "from_plan"),
)

# A plan's rotation policy: every key on the plan without its own policy follows it, through
# a key_rotation_policies row marked from_plan.
plan_rotation_policies = Table(
    "plan_rotation_policies",
    metadata,
    Column("plan_id", String(40), ForeignKey("plans.id"), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("policy", JsonType, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# The new secret of an automatic rotation, sealed (domain/sealing.py) until it is claimed once
# or its grace period ends; sealed_secret is erased (NULL) either way.
held_rotation_secrets = Table(
    "held_rotation_secrets",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id"), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("project_id", String(40), nullable=False),
    Column("sealed_secret", Text),
    Column("new_hash", String(128), nullable=False),
    Column("old_hash", String(128), nullable=False),
    Column("self_claim", Boolean, nullable=False),
    Column("reason", String(200), nullable=False),
    Column("state", String(20), nullable=False),
    Column("rotated_at", UTCDateTime(), nullable=False),
    Column("old_valid_until", UTCDateTime(), nullable=False),
    Column("claim_until", UTCDateTime(), nullable=False),
    Column("settled_at", UTCDateTime()),
    Index("ix_held_rotation_secrets_state", "state", "claim_until"),
    Index("ix_held_rotation_secrets_old_hash", "old_hash"),
)

# Leak response: each project's action when one of its keys is reported leaked (secret
# scanning, an operator). No row: the default action (``domain/leaks.DEFAULT_ACTION``).
project_leak_responses = Table(
    "project_leak_responses",
    metadata,
    Column("project_id", String(40), ForeignKey("projects.id"), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("action", String(16), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)
