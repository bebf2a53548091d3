"""Lease upstream credentials from Python, in-process (:class:`Vault`) or remote.

Both give the same context manager::

    async with open_vault(settings) as vault:           # or RemoteVault(url, management_key)
        async with vault.use_key(provider="openai", environment="production") as cred:
            reply = await call_openai(api_key=cred.secret)

The lease is released when the block ends. When the block raises, the exception decides the
outcome reported before it propagates: :class:`Unauthorized`, or any exception carrying an
HTTP status 401/403 (``httpx.HTTPStatusError``, the OpenAI and Anthropic SDKs' status errors),
disables the credential; :class:`RateLimited`, or a status 429 (honouring its ``Retry-After``),
cools it down so the next lease picks another. Anything else is reported as ``ok``: it says
nothing about the credential.

When nothing can be leased, :class:`NoCredentialError`, :class:`AllRateLimitedError` or
:class:`AllAtMaxConcurrencyError` is raised (all :class:`LeaseRefusedError`, with
``retry_after`` in seconds where known).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from keyplane.domain.clock import Clock, SystemClock
from keyplane.domain.tenancy import Principal
from keyplane.domain.vault import Outcome, Strategy
from keyplane.errors import KeyplaneError, NotFoundError
from keyplane.services.vault import (
    AllAtMaxConcurrencyError,
    AllRateLimitedError,
    CredentialStats,
    LeaseRefusedError,
    LeaseRequest,
    NewCredential,
    NoCredentialError,
    VaultService,
    configured_strategy,
)
from keyplane.settings import Settings
from keyplane.store.migrate import migrate
from keyplane.store.sql import SqlStore
from keyplane.store.vault import CredentialFilter, SqlVaultStore

__all__ = [
    "AllAtMaxConcurrencyError",
    "AllRateLimitedError",
    "LeaseRefusedError",
    "LeasedCredential",
    "NoCredentialError",
    "RateLimited",
    "RemoteVault",
    "Unauthorized",
    "Vault",
    "open_vault",
    "outcome_of",
]


class Unauthorized(Exception):
    """Raise inside ``use_key`` when the provider refused the credential."""


class RateLimited(Exception):
    """Raise inside ``use_key`` when the provider rate-limited the credential.

    Args:
        retry_after: seconds the provider asked to wait; 60 when unknown.
    """

    def __init__(self, message: str = "rate limited", retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class LeasedCredential:
    """A leased credential. ``repr`` never shows the secret."""

    lease_id: str
    credential_id: str
    provider: str
    alias: str
    secret: str = field(repr=False)
    environment: str | None
    expires_at: datetime


def outcome_of(exc: BaseException | None) -> tuple[Outcome, int | None]:
    """The outcome to report for an exception seen inside ``use_key`` (and a retry-after)."""
    if exc is None:
        return Outcome.OK, None
    if isinstance(exc, Unauthorized):
        return Outcome.UNAUTHORIZED, None
    if isinstance(exc, RateLimited):
        return Outcome.RATE_LIMITED, exc.retry_after
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    if status in (401, 403):
        return Outcome.UNAUTHORIZED, None
    if status == 429:
        headers = getattr(response, "headers", None)
        return Outcome.RATE_LIMITED, _retry_after(headers)
    return Outcome.OK, None


def _retry_after(headers: Any) -> int | None:
    try:
        value = headers.get("retry-after") if headers is not None else None
        return None if value is None else max(0, min(86_400, int(float(value))))
    except (TypeError, ValueError, AttributeError):
        # An HTTP-date or garbage: fall back to the default cool-down.
        return None


class _LeasingBase(ABC):
    @abstractmethod
    async def lease(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: tuple[str, ...] = (),
        metadata_filter: Mapping[str, str | int | float | bool] | None = None,
        ttl_seconds: int = 60,
        strategy: Strategy | str | None = None,
    ) -> LeasedCredential: ...

    @abstractmethod
    async def release(
        self, lease_id: str, outcome: Outcome = Outcome.OK, retry_after: int | None = None
    ) -> None: ...

    @contextlib.asynccontextmanager
    async def use_key(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        metadata_filter: Mapping[str, str | int | float | bool] | None = None,
        ttl_seconds: int = 60,
        strategy: Strategy | str | None = None,
    ) -> AsyncIterator[LeasedCredential]:
        """Lease a credential for the block; release it after, reporting how it went.

        Raises:
            LeaseRefusedError: nothing can be leased (a subclass says why).
        """
        credential = await self.lease(
            provider,
            environment=environment,
            tags=tuple(tags),
            metadata_filter=metadata_filter,
            ttl_seconds=ttl_seconds,
            strategy=strategy,
        )
        try:
            yield credential
        except BaseException as exc:
            outcome, retry_after = outcome_of(exc)
            with contextlib.suppress(NotFoundError):  # expired meanwhile: nothing to free
                await self.release(credential.lease_id, outcome, retry_after)
            raise
        with contextlib.suppress(NotFoundError):
            await self.release(credential.lease_id)


class Vault(_LeasingBase):
    """The vault in this process, on the same database as the server (no network hop).

    Acts for the organization with every vault scope. Make one with :func:`open_vault`.
    """

    def __init__(self, service: VaultService, principal: Principal) -> None:
        self.service = service
        self.principal = principal

    async def add(self, provider: str, alias: str, secret: str, **fields: Any) -> str:
        """Seal and store a credential; returns its id. ``fields`` as :class:`NewCredential`."""
        new = NewCredential(provider=provider, alias=alias, secret=secret, **fields)
        return (await self.service.add(self.principal, new)).id

    async def list(self, filters: CredentialFilter | None = None) -> list[CredentialStats]:
        return await self.service.list(self.principal, filters or CredentialFilter(), None, 100)

    async def lease(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: tuple[str, ...] = (),
        metadata_filter: Mapping[str, str | int | float | bool] | None = None,
        ttl_seconds: int = 60,
        strategy: Strategy | str | None = None,
    ) -> LeasedCredential:
        taken = await self.service.lease(
            self.principal,
            LeaseRequest(
                provider=provider,
                environment=environment,
                tags=tags,
                metadata_filter=dict(metadata_filter or {}),
                ttl=timedelta(seconds=ttl_seconds),
                strategy=None if strategy is None else Strategy(strategy),
            ),
        )
        record = taken.credential
        return LeasedCredential(
            taken.id,
            record.id,
            record.provider,
            record.alias,
            taken.secret,
            record.environment,
            taken.expires_at,
        )

    async def release(
        self, lease_id: str, outcome: Outcome = Outcome.OK, retry_after: int | None = None
    ) -> None:
        await self.service.release(self.principal, lease_id, outcome, retry_after)


@contextlib.asynccontextmanager
async def open_vault(
    settings: Settings | None = None, clock: Clock | None = None
) -> AsyncIterator[Vault]:
    """Open the vault of the database ``settings`` name (``KEYPLANE_*`` when omitted).

    Needs the same vault master key as the server (``KEYPLANE_VAULT_KEY``). Migrates the
    schema first when ``migrate_on_start`` is set, like the server.
    """
    settings = settings or Settings()
    keyring = settings.vault_keyring()
    clock = clock or SystemClock()
    store = SqlStore.from_url(settings.async_database_url, settings.database_schema)
    try:
        if settings.migrate_on_start:
            await migrate(store.engine, settings.database_schema)
        org, _project = await store.ensure_default_tenancy(clock.now())
        principal = Principal(
            key_id="library", org_id=org.id, project_id=None, scopes=("vault:*",), is_root=True
        )
        service = VaultService(
            SqlVaultStore(store),
            keyring,
            clock,
            default_strategy=configured_strategy(settings),
        )
        yield Vault(service, principal)
    finally:
        await store.close()


_REFUSAL_TYPES: dict[str, type[LeaseRefusedError]] = {
    "NO_CREDENTIAL": NoCredentialError,
    "ALL_RATE_LIMITED": AllRateLimitedError,
    "ALL_AT_MAX_CONCURRENCY": AllAtMaxConcurrencyError,
}


class RemoteVault(_LeasingBase):
    """The vault of a Keyplane server, over its API, with a ``vault:lease`` management key.

    Args:
        base_url: the server, e.g. ``https://keyplane.internal:8400``.
        management_key: a management key holding ``vault:lease``.
        client: an httpx client to use instead of a new one (its base URL and auth are used
            as they are when ``base_url`` is empty).
    """

    def __init__(
        self,
        base_url: str = "",
        management_key: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        headers = {} if management_key is None else {"Authorization": f"Bearer {management_key}"}
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._headers = headers

    async def __aenter__(self) -> RemoteVault:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def lease(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: tuple[str, ...] = (),
        metadata_filter: Mapping[str, str | int | float | bool] | None = None,
        ttl_seconds: int = 60,
        strategy: Strategy | str | None = None,
    ) -> LeasedCredential:
        body: dict[str, Any] = {
            "provider": provider,
            "tags": list(tags),
            "metadata_filter": dict(metadata_filter or {}),
            "ttl_seconds": ttl_seconds,
        }
        if strategy is not None:
            body["strategy"] = str(Strategy(strategy))
        if environment is not None:
            body["environment"] = environment
        response = await self._client.post("/v1/vault/leases", json=body, headers=self._headers)
        if response.status_code != 201:
            raise _error(response)
        data = response.json()
        return LeasedCredential(
            data["lease_id"],
            data["credential_id"],
            data["provider"],
            data["alias"],
            data["secret"],
            data["environment"],
            datetime.fromisoformat(data["expires_at"]),
        )

    async def release(
        self, lease_id: str, outcome: Outcome = Outcome.OK, retry_after: int | None = None
    ) -> None:
        body: dict[str, Any] = {"outcome": str(outcome)}
        if retry_after is not None:
            body["retry_after"] = retry_after
        response = await self._client.request(
            "DELETE", f"/v1/vault/leases/{lease_id}", json=body, headers=self._headers
        )
        if response.status_code != 200:
            raise _error(response)


def _error(response: httpx.Response) -> KeyplaneError:
    try:
        problem = response.json()
        code, detail = str(problem["code"]), str(problem["detail"])
    except (ValueError, KeyError, TypeError):
        code, detail = "HTTP_ERROR", f"the server answered {response.status_code}"
    if code in _REFUSAL_TYPES:
        retry_after = problem.get("retry_after")
        return _REFUSAL_TYPES[code](
            detail, retry_after=retry_after if isinstance(retry_after, int) else None
        )
    if response.status_code == 404:
        return NotFoundError(detail, code=code)
    return KeyplaneError(detail, code=code)
