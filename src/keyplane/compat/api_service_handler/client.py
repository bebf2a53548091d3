"""``APIServiceHandler``: seed 002's facade over Keyplane's vault, for a one-import migration.

::

    from keyplane.compat.api_service_handler.client import APIServiceHandler

    handler = APIServiceHandler(storage_backend="sqlite", connection_string="sqlite:///k.db",
                                shared_secret=os.environ["ASH_SHARED_SECRET"])
    await handler.initialize()
    async with handler.use_key(provider="openai", environment="production") as key:
        reply = await call_openai(api_key=key.key_value)
    await handler.close()

Underneath is Keyplane's vault, in this process (``services.runtime.open_vault_service``):
keys are sealed with envelope encryption under a master key derived from the shared secret,
limits are exact (a lease takes one use of the daily and monthly allowance and one concurrency
slot, atomically in the database), and the schema is Keyplane's, so a Keyplane server on the
same database and master key serves the same keys. Differences from the seed are listed in
docs/compatibility.md.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic

from keyplane import errors
from keyplane.client.vault import hold_async
from keyplane.compat.api_service_handler.config import HandlerConfig, master_key_of
from keyplane.compat.api_service_handler.enums import KeyStatus, StorageBackend
from keyplane.compat.api_service_handler.models import (
    APIKey,
    BulkOperationResult,
    LeasedKey,
    UsageStats,
)
from keyplane.domain import validation
from keyplane.domain.clock import Clock, SystemClock
from keyplane.domain.tenancy import Principal
from keyplane.domain.vault import CredentialStatus, Outcome, Strategy, normalize_provider
from keyplane.errors import (
    ConfigurationError,
    EncryptionError,
    KeyNotFoundError,
    MaxConcurrentExceededError,
    NoAvailableKeyError,
    RateLimitExceededError,
    StorageNotInitializedError,
    ValidationError,
)
from keyplane.services.runtime import open_vault_service
from keyplane.services.vault import (
    MAX_BULK,
    CredentialStats,
    LeaseRequest,
    NewCredential,
    VaultService,
    metadata_filter,
)
from keyplane.settings import Settings
from keyplane.store.vault import CredentialFilter

log = logging.getLogger(__name__)

#: Most keys one ``get_all_keys`` returns and one ``bulk_add_keys`` takes.
MAX_KEYS = 10_000
_PAGE = 200
#: How long a ``use_key`` block may hold its key before the slot frees itself (a crashed
#: process must not hold a concurrency slot for ever).
DEFAULT_HOLD_SECONDS = 600
MetadataFilter = Mapping[str, str | int | float | bool]


def provider_name(provider: object) -> str:
    """The canonical provider name; a name Keyplane does not know is ``custom`` (the seed's
    fallback). Enum members are read by value."""
    text = str(getattr(provider, "value", provider))
    if len(text) > 100:
        raise ValidationError("provider names are at most 100 characters", code="UNKNOWN_PROVIDER")
    try:
        return normalize_provider(text)
    except ValueError:
        return "custom"


def _environment(value: object | None) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value)).strip().lower()


class APIServiceHandler:
    """Seed 002's ``APIServiceHandler``: add, list, update and delete upstream keys, and hand
    them out by rotation within their limits.

    Arguments left as None come from ``ASH_*`` variables, then defaults (see
    :mod:`~keyplane.compat.api_service_handler.config`). ``storage_backend`` is ``memory`` (a
    private SQLite file removed on close), ``sqlite`` or ``postgresql``.

    Raises:
        ConfigurationError: an unusable setting (checked here, before anything opens).
    """

    def __init__(
        self,
        storage_backend: str | None = None,
        connection_string: str | None = None,
        shared_secret: str | None = None,
        rotation_strategy: str | None = None,
        encrypt_keys: bool | None = None,
        auto_reset_counters: bool | None = None,
        soft_delete: bool | None = None,
        default_daily_limit: int | None = None,
        default_monthly_limit: int | None = None,
        default_max_concurrent: int | None = None,
        config: HandlerConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._config = config or HandlerConfig.load(
            storage_backend=storage_backend,
            connection_string=connection_string,
            shared_secret=shared_secret,
            rotation_strategy=rotation_strategy,
            encrypt_keys=encrypt_keys,
            auto_reset_counters=auto_reset_counters,
            soft_delete=soft_delete,
            default_daily_limit=default_daily_limit,
            default_monthly_limit=default_monthly_limit,
            default_max_concurrent=default_max_concurrent,
        )
        self._clock = clock or SystemClock()
        self._strategy = Strategy(str(self._config.rotation_strategy))
        self._service: VaultService | None = None
        self._principal: Principal | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        if not self._config.encrypt_keys:
            log.warning("encrypt_keys=False is ignored: Keyplane always seals keys at rest")

    @property
    def config(self) -> HandlerConfig:
        return self._config

    @property
    def is_initialized(self) -> bool:
        return self._service is not None

    # -- lifecycle --------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Open the database (creating or migrating Keyplane's schema). Call it once."""
        if self._service is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            scratch = None
            if self._config.storage_backend is StorageBackend.MEMORY:
                scratch = Path(tempfile.mkdtemp(prefix="keyplane-ash-"))
                stack.callback(shutil.rmtree, scratch, True)
            settings = self._settings(scratch)
            service, org = await stack.enter_async_context(
                open_vault_service(settings, self._clock)
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._service = service
        # The library acts for the default organization with every vault scope, including
        # vault:reveal (get_key(decrypt=True)), which no management key is given.
        self._principal = Principal(
            key_id="api-service-handler",
            org_id=org.id,
            project_id=None,
            scopes=("vault:*",),
            is_root=True,
        )

    def _settings(self, scratch: Path | None) -> Settings:
        values: dict[str, Any] = {"database_url": self._config.database_url(scratch)}
        if self._config.shared_secret is not None:
            values["vault_key"] = master_key_of(self._config.shared_secret)
            values["vault_key_file"] = None
        try:
            settings = Settings(**values)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            raise ConfigurationError(f"Keyplane setting {where}: {first['msg']}") from None
        if settings.vault_key_configured:
            return settings
        if scratch is not None:
            # Memory: the keys die with the process, so a random master key loses nothing.
            return settings.model_copy(
                update={"vault_key": pydantic.SecretStr(_random_master_key())}
            )
        raise ConfigurationError(
            "set shared_secret (or ASH_SHARED_SECRET): keys are always encrypted at rest"
        )

    async def close(self) -> None:
        """Close the database connections (and remove a memory backend's data)."""
        stack, self._stack, self._service, self._principal = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> APIServiceHandler:
        await self.initialize()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _ready(self) -> tuple[VaultService, Principal]:
        if self._service is None or self._principal is None:
            raise StorageNotInitializedError("call 'await handler.initialize()' first")
        return self._service, self._principal

    # -- keys -------------------------------------------------------------------------------

    def _new(self, fields: Mapping[str, Any]) -> NewCredential:
        unknown = set(fields) - _ADD_FIELDS
        if unknown:
            raise ValidationError(f"unknown key fields: {', '.join(sorted(unknown))[:200]}")
        if "key_value" not in fields or "provider" not in fields:
            raise ValidationError("a key needs provider and key_value")
        if fields.get("priority") not in (None, 0) or fields.get("expires_at") is not None:
            raise ValidationError(
                "priority and expires_at are not supported: disable or delete a key instead"
            )
        provider = provider_name(fields["provider"])
        value = fields["key_value"]
        if not isinstance(value, str):
            raise ValidationError("key_value must be a string", code="INVALID_SECRET")
        alias = fields.get("alias") or f"{provider}-{secrets.token_hex(3)}"
        if not isinstance(alias, str):
            raise ValidationError("alias must be a string")
        environment = _environment(fields.get("environment", "production"))
        config = self._config

        def limit(name: str, default: int | None) -> int | None:
            # None takes the configured default; 0 is kept (it blocks the key).
            given = _whole(name, fields.get(name))
            return default if given is None else given

        weight = _whole("weight", fields.get("weight", 1))
        return NewCredential(
            provider=provider,
            alias=alias,
            secret=value,
            environment=environment,
            tags=_tags(fields.get("tags")),
            metadata=_mapping("metadata", fields.get("metadata")),
            weight=1 if weight is None else weight,
            daily_limit=limit("daily_limit", config.default_daily_limit),
            monthly_limit=limit("monthly_limit", config.default_monthly_limit),
            max_concurrent=limit("max_concurrent", config.default_max_concurrent),
        )

    async def add_key(
        self,
        provider: object,
        key_value: str,
        alias: str | None = None,
        daily_limit: int | None = None,
        monthly_limit: int | None = None,
        max_concurrent: int | None = None,
        environment: object = "production",
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        weight: int = 1,
        priority: int = 0,
    ) -> APIKey:
        """Seal and store a key; returns it with ``key_value`` masked.

        ``None`` limits take the configured defaults (unlimited when there are none); 0 blocks.
        An unknown provider name is filed as ``custom``.
        """
        service, principal = self._ready()
        new = self._new(
            {
                "provider": provider,
                "key_value": key_value,
                "alias": alias,
                "daily_limit": daily_limit,
                "monthly_limit": monthly_limit,
                "max_concurrent": max_concurrent,
                "environment": environment,
                "metadata": metadata,
                "tags": tags,
                "expires_at": expires_at,
                "weight": weight,
                "priority": priority,
            }
        )
        record = await service.add(principal, new)
        return APIKey.of(service.stats_of(record, 0))

    async def bulk_add_keys(self, keys: Sequence[Mapping[str, Any]]) -> BulkOperationResult:
        """Add many keys (dicts with :meth:`add_key`'s fields). A bad item fails alone; the
        result names it by index."""
        service, principal = self._ready()
        if len(keys) > MAX_KEYS:
            raise ValidationError(f"add at most {MAX_KEYS} keys at a time")
        result = BulkOperationResult(total=len(keys))
        ready: list[tuple[int, NewCredential]] = []
        for index, item in enumerate(keys):
            try:
                if not isinstance(item, Mapping):
                    raise ValidationError("each key is a dict of add_key's fields")
                ready.append((index, self._new(item)))
            except errors.KeyplaneError as exc:
                result.errors.append(f"key {index}: {exc.message}")
        for start in range(0, len(ready), MAX_BULK):
            chunk = ready[start : start + MAX_BULK]
            try:
                records = await service.add_many(principal, [new for _, new in chunk])
            except errors.ValidationError:
                # Find the bad ones: each alone, the good ones stored.
                records = []
                for index, new in chunk:
                    try:
                        records.append(await service.add(principal, new))
                    except errors.ValidationError as exc:
                        result.errors.append(f"key {index}: {exc.message}")
            result.created_ids.extend(record.id for record in records)
        result.successful = len(result.created_ids)
        result.failed = result.total - result.successful
        return result

    async def get_key(self, key_id: str, decrypt: bool = True) -> APIKey:
        """One key; ``decrypt=True`` puts the plaintext in ``key_value`` (else the hint).

        Raises:
            KeyNotFoundError: no key has this id.
            EncryptionError: the key was sealed under another shared secret.
        """
        stats = await self._stats(key_id)
        value = await self._reveal(key_id) if decrypt else None
        return APIKey.of(stats, value)

    async def _stats(self, key_id: str) -> CredentialStats:
        service, principal = self._ready()
        try:
            return await service.get(principal, key_id)
        except errors.NotFoundError:
            raise KeyNotFoundError(f"API key not found: {key_id[:64]!r}") from None

    async def _reveal(self, key_id: str) -> str:
        service, principal = self._ready()
        try:
            return await service.reveal(principal, key_id)
        except errors.NotFoundError:
            raise KeyNotFoundError(f"API key not found: {key_id[:64]!r}") from None
        except errors.VaultError as exc:
            raise _encryption(exc) from None

    async def get_all_keys(
        self,
        provider: object | None = None,
        status: object | None = None,
        environment: object | None = None,
        tags: Sequence[str] | None = None,
        metadata_filter: MetadataFilter | None = None,
        has_capacity: bool | None = None,
        alias_contains: str | None = None,
        decrypt: bool = False,
    ) -> list[APIKey]:
        """Keys matching every filter given (``tags``: any one of them; ``metadata_filter``:
        dot paths to values, all of them). At most :data:`MAX_KEYS`."""
        service, principal = self._ready()
        try:
            wanted_status = None if status is None else KeyStatus(str(status).lower()[:20])
        except ValueError:
            raise ValidationError(
                f"status is one of {', '.join(KeyStatus)}", code="INVALID_FILTER"
            ) from None
        wanted_tags = set(_tags(tags))
        if alias_contains is not None and len(alias_contains) > 200:
            raise ValidationError("alias_contains is at most 200 characters")
        filters = CredentialFilter(
            provider=None if provider is None else provider_name(provider),
            environment=_environment(environment),
            metadata=_metadata(metadata_filter),
            has_capacity=has_capacity,
        )
        found: list[APIKey] = []
        after: str | None = None
        while len(found) < MAX_KEYS:
            page = await service.list(principal, filters, after, _PAGE)
            for stats in page:
                key = APIKey.of(stats)
                if wanted_tags and not wanted_tags & set(key.tags):
                    continue
                if wanted_status is not None and key.status is not wanted_status:
                    continue
                if alias_contains and alias_contains.lower() not in (key.alias or "").lower():
                    continue
                found.append(key)
            if len(page) < _PAGE:
                break
            after = page[-1].record.id
        found = found[:MAX_KEYS]
        if decrypt:
            for key in found:
                key.key_value = await self._reveal(key.id)
        return found

    async def get_keys_by_provider(self, provider: object, decrypt: bool = False) -> list[APIKey]:
        """Every key of a provider."""
        return await self.get_all_keys(provider=provider, decrypt=decrypt)

    async def update_key(
        self,
        key_id: str,
        alias: str | None = None,
        status: object | None = None,
        daily_limit: int | None = None,
        monthly_limit: int | None = None,
        max_concurrent: int | None = None,
        environment: object | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        weight: int | None = None,
        key_value: str | None = None,
    ) -> APIKey:
        """Change the fields given (None leaves one as it is). ``status`` is ``active`` or
        ``inactive``; ``key_value`` replaces the secret (sealed again).

        Raises:
            KeyNotFoundError: no key has this id.
        """
        service, principal = self._ready()
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("daily_limit", _whole("daily_limit", daily_limit)),
                ("monthly_limit", _whole("monthly_limit", monthly_limit)),
                ("max_concurrent", _whole("max_concurrent", max_concurrent)),
                ("weight", _whole("weight", weight)),
            )
            if value is not None
        }
        for name, text in (("alias", alias), ("secret", key_value)):
            if text is not None:
                if not isinstance(text, str):
                    raise ValidationError(
                        f"{'key_value' if name == 'secret' else name} must be a string"
                    )
                changes[name] = text
        if environment is not None:
            changes["environment"] = _environment(environment)
        if metadata is not None:
            changes["metadata"] = _mapping("metadata", metadata)
        if tags is not None:
            changes["tags"] = _tags(tags)
        if status is not None:
            changes["status"] = _status_change(status)
        try:
            stats = await service.update(principal, key_id, changes)
        except errors.NotFoundError:
            raise KeyNotFoundError(f"API key not found: {key_id[:64]!r}") from None
        return APIKey.of(stats)

    async def delete_key(self, key_id: str, hard: bool = False) -> bool:
        """Revoke a key (kept for audit), or erase it when ``hard`` or ``soft_delete`` is off.

        Returns:
            Whether there was such a key.
        """
        service, principal = self._ready()
        try:
            await service.delete(principal, key_id, hard=hard or not self._config.soft_delete)
        except errors.NotFoundError:
            return False
        return True

    # -- handing keys out -------------------------------------------------------------------

    async def _lease(
        self,
        provider: object,
        environment: object | None,
        tags: Sequence[str] | None,
        metadata_filter: MetadataFilter | None,
        hold_seconds: int,
    ) -> LeasedKey:
        service, principal = self._ready()
        name = provider_name(provider)
        request = LeaseRequest(
            provider=name,
            environment=_environment(environment),
            tags=_tags(tags),
            metadata_filter=_mapping("metadata_filter", metadata_filter),
            ttl=timedelta(seconds=hold_seconds),
            strategy=self._strategy,
        )
        try:
            lease = await service.lease(principal, request)
        except errors.LeaseRefusedError as exc:
            raise _refusal(exc, name) from None
        except errors.VaultError as exc:
            raise _encryption(exc) from None
        record = lease.credential
        return LeasedKey(
            id=record.id,
            provider=record.provider,
            alias=record.alias,
            key_value=lease.secret,
            environment=record.environment,
            lease_id=lease.id,
            expires_at=lease.expires_at,
        )

    async def get_next_key(
        self,
        provider: object,
        environment: object | None = None,
        tags: Sequence[str] | None = None,
        metadata_filter: MetadataFilter | None = None,
        decrypt: bool = True,
    ) -> APIKey:
        """The key the rotation picks next. It counts as one use (Keyplane's limits are
        exact: a key handed out is a key used); prefer :meth:`use_key`.

        Raises:
            NoAvailableKeyError, RateLimitExceededError, MaxConcurrentExceededError.
        """
        service, principal = self._ready()
        leased = await self._lease(provider, environment, tags, metadata_filter, 1)
        with contextlib.suppress(errors.NotFoundError):
            await service.release(principal, leased.lease_id, Outcome.OK)
        stats = await self._stats(leased.id)
        return APIKey.of(stats, leased.key_value if decrypt else None)

    @contextlib.asynccontextmanager
    async def use_key(
        self,
        provider: object,
        environment: object | None = None,
        tags: Sequence[str] | None = None,
        metadata_filter: MetadataFilter | None = None,
        hold_seconds: int = DEFAULT_HOLD_SECONDS,
    ) -> AsyncIterator[LeasedKey]:
        """Hold a key for the block: one use of its allowance, one of its concurrency slots.

        The slot is freed when the block ends (or after ``hold_seconds`` if the process dies).
        An exception carrying HTTP 401/403 disables the key; a 429 cools it down (its
        ``Retry-After`` honoured), so the next block gets another key.

        Raises:
            NoAvailableKeyError: no key matches, or none is usable.
            RateLimitExceededError: every match is cooling down or out of allowance.
            MaxConcurrentExceededError: every usable match has all its slots in use.
        """
        service, principal = self._ready()

        async def give_back(lease: LeasedKey, outcome: str, retry_after: int | None) -> None:
            await service.release(principal, lease.lease_id, Outcome(outcome), retry_after)

        async with hold_async(
            lambda: self._lease(provider, environment, tags, metadata_filter, hold_seconds),
            give_back,
            (errors.NotFoundError,),
        ) as leased:
            yield leased

    # -- usage ------------------------------------------------------------------------------

    async def get_usage_stats(self, key_id: str) -> UsageStats:
        """A key's use today and this month (UTC) against its limits.

        Raises:
            KeyNotFoundError: no key has this id.
        """
        return UsageStats.of(await self._stats(key_id))

    async def get_provider_stats(self, provider: object) -> list[UsageStats]:
        """The usage of every key of a provider that is not revoked."""
        service, principal = self._ready()
        totals = await service.provider_stats(principal, provider_name(provider))
        return [UsageStats.of(item) for item in totals.items]

    async def get_concurrent_usage(self, key_id: str) -> int:
        """How many ``use_key`` blocks hold the key now."""
        return (await self._stats(key_id)).live_leases

    async def health_check(self) -> dict[str, Any]:
        """Whether the database answers, with the handler's settings (never the secret)."""
        healthy = False
        if self._service is not None and self._principal is not None:
            try:
                await self._service.list(self._principal, CredentialFilter(), None, 1)
                healthy = True
            except errors.KeyplaneError as exc:
                log.warning("health check failed: %s", type(exc).__name__)
        return {
            "initialized": self.is_initialized,
            "storage_backend": str(self._config.storage_backend),
            "storage_healthy": healthy,
            "encryption_enabled": True,
            "rotation_strategy": str(self._config.rotation_strategy),
        }


_ADD_FIELDS = frozenset(
    {
        "provider",
        "key_value",
        "alias",
        "daily_limit",
        "monthly_limit",
        "max_concurrent",
        "environment",
        "metadata",
        "tags",
        "expires_at",
        "weight",
        "priority",
    }
)


def _tags(value: object) -> tuple[str, ...]:
    """Tags as given by a caller, checked before any work (any iterable of strings)."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError("tags must be a list of strings")
    tags = list(value)
    if len(tags) > 100 or not all(isinstance(tag, str) for tag in tags):
        raise ValidationError("tags must be a list of at most 100 strings")
    try:
        return tuple(validation.check_tags(tags))
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _mapping(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be a dict")
    return dict(value)


def _whole(name: str, value: object) -> int | None:
    """A count as given: a whole number (not a bool) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be a whole number")
    return value


def _random_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _metadata(given: MetadataFilter | None) -> tuple[tuple[tuple[str, ...], str], ...]:
    return metadata_filter(_mapping("metadata_filter", given))


def _status_change(status: object) -> CredentialStatus:
    text = str(getattr(status, "value", status)).strip().lower()
    if text == KeyStatus.ACTIVE:
        return CredentialStatus.ACTIVE
    if text == KeyStatus.INACTIVE:
        return CredentialStatus.DISABLED
    raise ValidationError(
        "status can be set to active or inactive (delete_key revokes)", code="INVALID_STATUS"
    )


def _refusal(exc: errors.LeaseRefusedError, provider: str) -> errors.LeaseRefusedError:
    """The seed's class for Keyplane's refusal, keeping ``retry_after``."""
    retry = exc.retry_after
    if isinstance(exc, errors.AllAtMaxConcurrencyError):
        return MaxConcurrentExceededError(
            f"every {provider} key has all its concurrent slots in use", retry_after=retry
        )
    if isinstance(exc, errors.AllRateLimitedError) or retry is not None:
        # Cooling down, or out of daily/monthly allowance until the next UTC day or month.
        return RateLimitExceededError(
            f"every matching {provider} key is rate limited or out of its allowance",
            retry_after=retry,
        )
    return NoAvailableKeyError(f"No available API key for provider '{provider}'")


def _encryption(exc: errors.VaultError) -> EncryptionError:
    if isinstance(exc, EncryptionError):
        return exc
    return EncryptionError(
        "the key cannot be decrypted: it was stored under another shared secret, or altered"
    )


__all__ = ["APIServiceHandler", "provider_name"]
