"""Runtime configuration, read from ``KEYPLANE_*`` environment variables (and CLI flags)."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keyplane.domain.envelope import KEY_BYTES, Keyring, MasterKey
from keyplane.domain.forwarding import parse_trusted
from keyplane.domain.leaks import load_public_keys_text
from keyplane.domain.network import IpNetwork
from keyplane.domain.schedules import check_cron
from keyplane.errors import ConfigurationError, KeyplaneError

# Explicit mapping from the URL schemes operators write to the async drivers Keyplane uses.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
MIN_SECRET_LENGTH = 32
MIN_ROOT_KEY_LENGTH = 32
MAX_ROOT_KEY_LENGTH = 512
MAX_TRUSTED_PROXIES = 256


class Settings(BaseSettings):
    """All of Keyplane's settings. See docs/configuration.md for each one."""

    # hide_input_in_errors: a mistyped secret or key must not be echoed into a traceback or log.
    model_config = SettingsConfigDict(
        env_prefix="KEYPLANE_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite:///./keyplane.db"
    database_schema: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    #: PostgreSQL's connection pool per process: connections kept open, and how many more
    #: may be opened under a burst (SQLite keeps its own pool).
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    database_max_overflow: int = Field(default=20, ge=0, le=1000)
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=1, le=65535)
    #: The gRPC API and Envoy ext_authz (docs/grpc.md) on this port, beside HTTP on the same
    #: host; off when unset. 0 takes any free port (tests).
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    secret: SecretStr | None = None
    root_key: SecretStr | None = None
    #: Where a generated root key is written when stderr is not a terminal. Default: beside
    #: the SQLite database (``<file>.root-key``), else ``keyplane.root-key`` in the working
    #: directory. It is only ever written, never read.
    generated_root_key_file: Path | None = None
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    #: One JSON line per request on the ``keyplane.access`` logger (api/observe.py), in place
    #: of uvicorn's access log: request id, route template, status, latency, principal id.
    access_log: bool = True
    #: ``POST /v1/verify`` and ``GET /healthz`` answered by the lean data plane
    #: (api/data_plane.py) rather than FastAPI's router: the same answers for less CPU.
    lean_data_plane: bool = True
    #: ``gc.freeze()`` once the runtime is up (docs/performance.md): right for a server, whose
    #: startup objects live as long as it does; wrong for a process that starts and stops many
    #: apps (a test suite), where each frozen heap would stay for good.
    gc_freeze: bool = True
    #: Live usage streams (services/usage_stream.py): events one subscriber may have waiting
    #: before it is dropped as too slow, streams one instance serves, and the seconds between
    #: two keep-alive messages on an idle stream.
    usage_stream_queue: int = Field(default=256, ge=1, le=100_000)
    usage_stream_max_subscribers: int = Field(default=1000, ge=1, le=100_000)
    usage_stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=3600)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Most header fields in one request, and most bytes in its request line and headers
    #: together; past either, 431 (api/header_limit.py).
    max_header_count: int = Field(default=100, ge=16, le=10_000)
    max_header_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    #: Seconds an idle keep-alive connection stays open between requests. Must outlast the
    #: idle expiry of whoever pools connections to Keyplane (httpx and so Keyplane's own client:
    #: 5 s; nginx's upstream keepalive_timeout: 60 s): at uvicorn's 5 s a client reused a
    #: connection just as the server closed it, and the request died in a reset (ReadError).
    keep_alive_timeout: int = Field(default=75, ge=1, le=3600)
    cache_ttl_seconds: float = Field(default=30.0, gt=0)
    negative_cache_ttl_seconds: float = Field(default=5.0, ge=0)
    cache_max_entries: int = Field(default=500_000, ge=100)
    #: How many of the cached keys are also kept unpacked, ready for verify (about 2.6 KB
    #: each); the others are unpacked on use (a few µs). See docs/performance.md.
    cache_hot_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    last_used_flush_seconds: float = Field(default=1.0, gt=0)
    #: Redis for limits, live budget counters and cache invalidation shared by every instance.
    #: Without it, limits are per process and only one process may serve.
    redis_url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://")
    redis_max_connections: int = Field(default=64, ge=2, le=10_000)
    #: What limits do while Redis is unreachable: ``fallback`` to in-process limits at
    #: limit / ``expected_instances``, ``open`` (no limits) or ``closed`` (refuse).
    limits_on_redis_failure: Literal["fallback", "open", "closed"] = "fallback"
    #: What windows of an hour and longer and concurrency slots do once Redis is found to have
    #: lost them (a restart or failover without the data): ``fail_closed`` counts each such
    #: window as used up; ``reseed`` rebuilds it from the database, where each instance
    #: writes the windows' state every ``limit_windows_flush_seconds``; both refuse slots
    #: until every slot taken before is over. ``forget`` starts them all empty. See
    #: docs/deployment.md.
    limits_after_redis_loss: Literal["fail_closed", "reseed", "forget"] = "fail_closed"
    limit_windows_flush_seconds: float = Field(default=1.0, gt=0, le=3600)
    expected_instances: int = Field(default=1, ge=1, le=10_000)
    #: This instance's name in the instance registry (``?wait=confirmed`` answers name the
    #: instances that did or did not confirm). Default: host name, process id and a random
    #: suffix, made at start.
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    #: How often an instance records that it is alive, and how long after its last heartbeat
    #: it still counts as live (a revoke with ``?wait=confirmed`` waits for every live one).
    instance_heartbeat_seconds: float = Field(default=5.0, gt=0, le=300)
    instance_liveness_seconds: float = Field(default=15.0, gt=0, le=3600)
    #: How long ``?wait=confirmed`` waits when the request gives no ``timeout``.
    confirm_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    #: How long every write that evicts a cached key (revoke, disable, rotate, update, of API
    #: and management keys) waits, before it answers, for each other live instance to
    #: acknowledge the eviction. Publishing alone does not guarantee the other instance has
    #: processed it before the client's next request reaches it. 0: publish and answer.
    eviction_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    #: How long a verify's reservation (credits, tokens) and concurrency slot wait for the
    #: usage report that settles them before they are released anyway.
    reservation_timeout_seconds: int = Field(default=300, ge=1, le=86_400)
    #: How long a retried create under the same ``Idempotency-Key`` may get the key's secret
    #: again. After it the replay is refused (409 ``IDEMPOTENCY_KEY_EXPIRED``) and the sealed
    #: copy of the secret is erased: "shown once" holds beyond a retry's short horizon.
    idempotency_secret_window_seconds: int = Field(default=600, ge=1, le=86_400)
    #: Most usage reports written in one transaction (group commit).
    usage_batch_max: int = Field(default=500, ge=1, le=10_000)
    migrate_on_start: bool = True
    #: ``/prod/createServiceKey`` (FastRouter) creates a project it names that does not exist
    #: yet, for callers that may create projects; off, such a request is a 404.
    compat_create_projects: bool = False
    #: Analytics rollups (docs/analytics.md): kept unless turned off (a benchmark compares).
    rollups_enabled: bool = True
    #: How long minute and hour rollups are kept; day rollups are kept as long as the key.
    rollup_minute_retention_hours: int = Field(default=48, ge=1, le=24 * 30)
    rollup_hour_retention_days: int = Field(default=90, ge=1, le=3660)
    #: Seconds between flushes of the verify outcome counts kept in memory: a crash loses
    #: at most this much of them (usage reports are never lost: the ledger keeps them).
    rollup_flush_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: Seconds between background passes folding the usage the ledger keeps pending into the
    #: rollups. Reads fold first, so this only bounds how long pending rows wait unread.
    rollup_fold_seconds: float = Field(default=1.0, gt=0, le=3600)
    #: Most distinct models (and features) a key gets its own rows for per day; the rest
    #: count as "(other)", so no client can grow the rollups without bound.
    rollup_max_values_per_key: int = Field(default=100, ge=1, le=10_000)
    #: Seconds between pruning passes (rollups past retention, raw events past theirs).
    rollup_prune_seconds: float = Field(default=300.0, gt=0, le=86_400)
    #: Days raw usage events are kept (None: forever). Rollups outlive them. A report retried
    #: after its event is pruned counts again, so keep this well past any retry horizon.
    usage_event_retention_days: int | None = Field(default=None, ge=1, le=36_600)
    #: Audit entries older than this many days are pruned (a checkpoint keeps the rest
    #: verifiable); unset keeps them forever. See docs/audit.md.
    audit_retention_days: int | None = Field(default=None, ge=1, le=36_500)
    #: How often counted security events (failed authentication, denials, verify refusals)
    #: are written to the audit log; a crash loses at most this long of them.
    audit_flush_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: The header ``/v1/auth`` reads the API key from: ``Authorization`` (as ``Bearer <key>``)
    #: or any other header, which then holds the bare key (``X-API-Key``).
    auth_key_header: str = Field(
        default="Authorization", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$"
    )
    #: Proxies (addresses or CIDR networks) whose ``X-Forwarded-For`` / ``X-Real-IP`` are
    #: believed. Empty: those headers are ignored and the TCP peer is the client.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    #: A header a trusted proxy (``trusted_proxies``) writes the client's ISO 3166 country
    #: into, e.g. ``CF-IPCountry``; read by forward auth for ``network.countries_*``.
    country_header: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$"
    )
    #: A MaxMind or DB-IP ``.mmdb`` country (or city) database, read when verify is not told
    #: the country but the key has country rules and the client's IP is known.
    geoip_database: Path | None = None
    #: Most nonces of signed requests one instance remembers (without Redis); past it a new
    #: nonce is refused (NONCE_REUSED) until old ones expire: bounded memory, fail closed.
    nonce_max_entries: int = Field(default=1_000_000, ge=1000, le=100_000_000)

    #: Webhook deliveries (services/outbound.py): networks they may reach although private,
    #: loopback, link-local and so on (CIDRs, commas or spaces; default none), whether plain
    #: http:// endpoints are accepted, the time one delivery may take, and the most response
    #: bytes read.
    webhook_allow_networks: Annotated[tuple[str, ...], NoDecode] = ()
    webhook_allow_http: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_max_response_bytes: int = Field(default=4096, ge=0, le=1024 * 1024)

    #: Email notifications (services/email.py): the SMTP server, its credentials, the sender
    #: address, and whether to upgrade the connection with STARTTLS (port 465 uses TLS from
    #: the first byte instead). No host: email is off.
    smtp_host: str | None = Field(default=None, min_length=1, max_length=253)
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = Field(default=None, max_length=256)
    smtp_password: SecretStr | None = None
    smtp_from: str | None = Field(default=None, max_length=254)
    smtp_starttls: bool = True
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    #: Vault master key: standard or URL-safe base64 of exactly 32 random bytes. It seals
    #: new upstream credentials. Alternatively ``vault_key_file`` names a file holding it.
    vault_key: SecretStr | None = None
    vault_key_file: Path | None = None
    #: Comma-separated base64 master keys that still open secrets during a rotation window.
    vault_previous_keys: SecretStr | None = None

    #: Webhooks: workers per instance (SQLite: always one), deliveries claimed at a time,
    #: how long a claim hides a delivery from other workers
    #: (longer than the timeout: a delivery whose worker died is sent again after it), how
    #: often idle workers look for due deliveries, how long an endpoint may fail before it is
    #: disabled, and how long a rotated-out signing secret keeps signing.
    webhook_workers: int = Field(default=2, ge=0, le=64)
    webhook_batch: int = Field(default=20, ge=1, le=1000)
    webhook_claim_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    webhook_disable_after_hours: float = Field(default=48.0, gt=0, le=24 * 30)
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    #: Secret scanning (``POST /v1/secret-scanning/github``): the reporter's public keys, as
    #: GitHub publishes them (``/meta/public_keys/secret_scanning``) or as an
    #: ``{identifier: PEM}`` JSON map, inline or in a file (never fetched: no outbound call).
    #: Neither set: the endpoint refuses every report (401).
    secret_scanning_keys: str | None = Field(default=None, max_length=256 * 1024)
    secret_scanning_keys_file: Path | None = None
    #: How long the leaked secret keeps working after a ``rotate`` leak response.
    leak_rotate_grace_minutes: int = Field(default=60, ge=0, le=24 * 60)
    #: ``key.expiring`` is sent this many days before a key expires, once per key and value.
    key_expiring_days: Annotated[tuple[int, ...], NoDecode] = (30, 7, 1)
    #: Scheduled jobs (services/jobs.py): how often each instance looks for due jobs, and how
    #: long a claimed run may take before another instance may run the job again.
    jobs_poll_seconds: float = Field(default=5.0, gt=0, le=300)
    job_lease_seconds: float = Field(default=300.0, ge=10, le=24 * 3600)
    #: ``key.rotation.scheduled`` is sent this many hours before a key's automatic rotation.
    rotation_notice_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    #: When set (a cron expression, UTC), the security report runs on this schedule and each
    #: organization's is sent as a ``security.report`` event (docs/leaks-and-reports.md).
    security_report_schedule: str | None = Field(default=None, max_length=200)

    @field_validator("security_report_schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return check_cron(value)
        except KeyplaneError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("key_expiring_days", mode="before")
    @classmethod
    def _split_days(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(part) for part in value.replace(",", " ").split() if part)
        return value

    @field_validator("key_expiring_days")
    @classmethod
    def _days_bounded(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) > 16 or any(not 1 <= day <= 366 for day in value):
            raise ValueError("KEYPLANE_KEY_EXPIRING_DAYS: at most 16 values, each 1-366")
        return tuple(sorted(set(value), reverse=True))

    @model_validator(mode="after")
    def _webhook_lease_past_timeout(self) -> Settings:
        if self.webhook_claim_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError(
                "KEYPLANE_WEBHOOK_CLAIM_LEASE_SECONDS must exceed KEYPLANE_WEBHOOK_TIMEOUT_SECONDS"
            )
        return self

    @field_validator("secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"KEYPLANE_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("root_key")
    @classmethod
    def _root_key_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value()
        if not MIN_ROOT_KEY_LENGTH <= len(text) <= MAX_ROOT_KEY_LENGTH:
            raise ValueError(
                f"KEYPLANE_ROOT_KEY must be {MIN_ROOT_KEY_LENGTH}-{MAX_ROOT_KEY_LENGTH} characters"
            )
        if text != text.strip() or any(ord(char) < 33 or ord(char) > 126 for char in text):
            # It travels in an Authorization header: printable ASCII without spaces only.
            raise ValueError("KEYPLANE_ROOT_KEY must be printable ASCII without spaces")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        # From the environment: "10.0.0.0/8, 192.168.1.10" (commas or spaces).
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_TRUSTED_PROXIES:
            raise ValueError(f"at most {MAX_TRUSTED_PROXIES} trusted proxies")
        parse_trusted(value)  # ValueError names the bad entry
        return value

    @field_validator("webhook_allow_networks", mode="before")
    @classmethod
    def _split_webhook_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @field_validator("webhook_allow_networks")
    @classmethod
    def _webhook_networks_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_TRUSTED_PROXIES:
            raise ValueError(f"at most {MAX_TRUSTED_PROXIES} webhook networks")
        parse_trusted(value)  # ValueError names the bad entry
        return value

    @cached_property
    def webhook_allow_network_list(self) -> tuple[IpNetwork, ...]:
        return parse_trusted(self.webhook_allow_networks)

    @cached_property
    def trusted_networks(self) -> tuple[IpNetwork, ...]:
        # Parsed once: every forward-auth request consults it.
        return parse_trusted(self.trusted_proxies)

    @field_validator("vault_key")
    @classmethod
    def _vault_key_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_master_key(value.get_secret_value(), "KEYPLANE_VAULT_KEY")
        return value

    @field_validator("vault_previous_keys")
    @classmethod
    def _previous_vault_keys_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_previous_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _liveness_spans_heartbeats(self) -> Settings:
        # A live instance must beat at least twice per liveness period, or one late heartbeat
        # would drop it from the registry and a confirmed revoke would stop waiting for it.
        if self.instance_liveness_seconds < 2 * self.instance_heartbeat_seconds:
            raise ValueError(
                "KEYPLANE_INSTANCE_LIVENESS_SECONDS must be at least twice "
                "KEYPLANE_INSTANCE_HEARTBEAT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _one_vault_key_source(self) -> Settings:
        if self.vault_key is not None and self.vault_key_file is not None:
            raise ValueError("set KEYPLANE_VAULT_KEY or KEYPLANE_VAULT_KEY_FILE, not both")
        if self.vault_previous_keys is not None and not self.vault_key_configured:
            raise ValueError(
                "KEYPLANE_VAULT_PREVIOUS_KEYS needs a current key in KEYPLANE_VAULT_KEY "
                "or KEYPLANE_VAULT_KEY_FILE"
            )
        return self

    @model_validator(mode="after")
    def _one_secret_scanning_source(self) -> Settings:
        if self.secret_scanning_keys is not None and self.secret_scanning_keys_file is not None:
            raise ValueError(
                "set KEYPLANE_SECRET_SCANNING_KEYS or KEYPLANE_SECRET_SCANNING_KEYS_FILE, not both"
            )
        if self.secret_scanning_keys is not None:
            load_public_keys_text(self.secret_scanning_keys)  # refuse a bad value at start
        return self

    def secret_scanning_public_keys(self) -> dict[str, EllipticCurvePublicKey]:
        """The reporter keys secret scanning checks signatures with (empty when none).

        Raises:
            ConfigurationError: the file cannot be read or does not hold such keys.
        """
        text = self.secret_scanning_keys
        if self.secret_scanning_keys_file is not None:
            try:
                text = self.secret_scanning_keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read KEYPLANE_SECRET_SCANNING_KEYS_FILE: {exc.strerror}"
                ) from None
        if text is None:
            return {}
        try:
            return load_public_keys_text(text)
        except ValueError as exc:
            raise ConfigurationError(f"secret scanning keys: {exc}") from None

    @model_validator(mode="after")
    def _smtp_complete(self) -> Settings:
        if self.smtp_host is not None and self.smtp_from is None:
            raise ValueError("KEYPLANE_SMTP_FROM is needed when KEYPLANE_SMTP_HOST is set")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("set KEYPLANE_SMTP_USERNAME and KEYPLANE_SMTP_PASSWORD together")
        return self

    @property
    def vault_key_configured(self) -> bool:
        return self.vault_key is not None or self.vault_key_file is not None

    def vault_keyring(self) -> Keyring | None:
        """The vault's keyring, or ``None`` when no vault master key is configured.

        Reads ``vault_key_file`` on each call; call once at start-up and keep the result.

        Raises:
            ConfigurationError: the key file is missing, unreadable, writable by others, or
                does not hold a 32-byte key. Messages never contain key material.
        """
        if self.vault_key is not None:
            current = _parse_master_key(self.vault_key.get_secret_value(), "KEYPLANE_VAULT_KEY")
        elif self.vault_key_file is not None:
            current = read_master_key_file(self.vault_key_file)
        else:
            return None
        previous = (
            _parse_previous_keys(self.vault_previous_keys.get_secret_value())
            if self.vault_previous_keys is not None
            else []
        )
        return Keyring(current, previous)

    @property
    def async_database_url(self) -> str:
        return to_async_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")


def to_async_url(url: str) -> str:
    """Map a plain database URL to its async-driver form (``sqlite:///x`` -> aiosqlite)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _ASYNC_DRIVERS:
        known = ", ".join(sorted(k for k in _ASYNC_DRIVERS if "+" not in k))
        raise ConfigurationError(f"unsupported database URL scheme {scheme!r}; use one of {known}")
    return f"{_ASYNC_DRIVERS[scheme]}://{rest}"


def sqlite_path(async_url: str) -> Path | None:
    """The file behind a SQLite URL, or ``None`` for an in-memory database."""
    rest = async_url.partition("://")[2]
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


def resolve_server_secret(settings: Settings) -> bytes:
    """The server pepper used to hash keys.

    When ``KEYPLANE_SECRET`` is unset on the embedded SQLite default, a secret is generated on
    first run and kept in ``<database file>.secret`` (mode 0600) so restarts keep verifying the
    same keys. On PostgreSQL it must be set: every instance needs the same one.
    """
    if settings.secret is not None:
        return settings.secret.get_secret_value().encode("utf-8")
    if not settings.is_sqlite:
        raise ConfigurationError(
            "KEYPLANE_SECRET is required with a PostgreSQL database: every instance must "
            "hash keys with the same secret. Generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    path = sqlite_path(settings.async_database_url)
    if path is None:
        return secrets.token_urlsafe(48).encode("ascii")
    secret_file = path.with_name(path.name + ".secret")
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = secret_file.read_text(encoding="ascii").strip()
        if len(value) < MIN_SECRET_LENGTH:
            raise ConfigurationError(f"{secret_file} is damaged: too short") from None
        return value.encode("ascii")
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
    return value.encode("ascii")


def generated_root_key_path(settings: Settings) -> Path:
    """Where a generated root key is written when there is no terminal to show it on."""
    if settings.generated_root_key_file is not None:
        return settings.generated_root_key_file
    path = sqlite_path(settings.async_database_url) if settings.is_sqlite else None
    if path is None:
        return Path("keyplane.root-key")
    return path.with_name(path.name + ".root-key")


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte, replacing the file.

    A fresh temporary file (``O_EXCL``, never following a link) is renamed over ``path``, so
    the text is never readable by others, not even for a moment, and a link planted at
    ``path`` is replaced rather than written through.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _parse_master_key(text: str, name: str) -> MasterKey:
    # pydantic turns ValueError into a settings error; ConfigurationError is not a ValueError.
    try:
        return MasterKey.from_base64(text, name=name)
    except ConfigurationError as exc:
        raise ValueError(exc.message) from None


def _parse_previous_keys(text: str) -> list[MasterKey]:
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError("KEYPLANE_VAULT_PREVIOUS_KEYS is empty; unset it instead")
    return [
        _parse_master_key(item, f"KEYPLANE_VAULT_PREVIOUS_KEYS item {number}")
        for number, item in enumerate(items, start=1)
        if item
    ]


def read_master_key_file(path: Path) -> MasterKey:
    """Read a vault master key from ``path``: base64 text (one line), or exactly 32 raw bytes.

    Raises:
        ConfigurationError: missing, unreadable, writable by group or others (someone else
            could swap the key), or not a 32-byte key.
    """
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the vault key file {path}: {exc.strerror or exc}"
        ) from None
    if mode & 0o022:
        raise ConfigurationError(
            f"the vault key file {path} is writable by group or others; chmod 600 (or 400) it"
        )
    if len(raw) == KEY_BYTES:
        try:
            return MasterKey.from_base64(raw.decode("ascii"), name=f"vault key file {path}")
        except (UnicodeDecodeError, ConfigurationError):
            # 32 raw bytes cannot be the base64 of 32 bytes (that is 44 characters).
            return MasterKey(raw)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"the vault key file {path} holds neither base64 text nor {KEY_BYTES} raw bytes"
        ) from None
    return MasterKey.from_base64(text, name=f"vault key file {path}")
