"""Lease upstream credentials from Python: in-process (:class:`Vault`) or remote (the SDK).

The issue's one line works as it is::

    import keyplane.vault

    async with keyplane.vault.use_key(provider="openai", environment="production") as cred:
        reply = await call_openai(api_key=cred.secret)

It uses a process-wide vault opened on first use: the server's, through the SDK, when
``KEYPLANE_URL`` is set (with ``KEYPLANE_MANAGEMENT_KEY`` holding ``vault:lease``), else the
database's, in this process, from ``Settings()`` (``KEYPLANE_DATABASE_URL``,
``KEYPLANE_VAULT_KEY``...). :func:`configure` sets it explicitly, :func:`close` closes it. An
explicit vault works the same way::

    async with open_vault(settings) as vault:            # or RemoteVault(url, management_key)
        async with vault.use_key(provider="openai") as cred:
            ...

The lease is released when the block ends. When the block raises, the exception decides the
outcome reported before it propagates (:func:`outcome_of`, the SDK's: one rule for both):
:class:`Unauthorized`, or any exception carrying an HTTP status 401/403, disables the
credential; :class:`RateLimited`, or a status 429 (honouring its ``Retry-After``), cools it
down so the next lease picks another. Anything else is reported as ``ok``.

When nothing can be leased, :class:`NoCredentialError`, :class:`AllRateLimitedError` or
:class:`AllAtMaxConcurrencyError` is raised, in both modes (the SDK's classes, all
:class:`LeaseRefusedError`, with ``retry_after`` in seconds where known).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from keyplane import client as sdk
from keyplane import errors
from keyplane.api.problems import status_for
from keyplane.client import (
    AllAtMaxConcurrencyError,
    AllRateLimitedError,
    LeaseRefusedError,
    NoCredentialError,
    RateLimited,
    Unauthorized,
    outcome_of,
)
from keyplane.client.errors import error_for
from keyplane.client.vault import hold_async
from keyplane.domain.clock import Clock, SystemClock
from keyplane.domain.tenancy import Principal
from keyplane.domain.vault import Outcome, Strategy
from keyplane.errors import NotFoundError
from keyplane.services.runtime import open_vault_service
from keyplane.services.vault import (
    CredentialStats,
    LeaseRequest,
    NewCredential,
    VaultService,
)
from keyplane.settings import Settings
from keyplane.store.vault import CredentialFilter

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
    "close",
    "configure",
    "open_vault",
    "outcome_of",
    "use_key",
]

MetadataFilter = Mapping[str, str | int | float | bool]

#: Release errors meaning the lease is gone already (expired meanwhile): nothing to free.
_GONE = (NotFoundError, sdk.NotFoundError, sdk.ConflictError)


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


class _LeasingBase(ABC):
    @abstractmethod
    async def lease(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: tuple[str, ...] = (),
        metadata_filter: MetadataFilter | None = None,
        ttl_seconds: int = 60,
        strategy: Strategy | str | None = None,
    ) -> LeasedCredential: ...

    @abstractmethod
    async def release(
        self, lease_id: str, outcome: Outcome | str = Outcome.OK, retry_after: int | None = None
    ) -> None: ...

    def use_key(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        metadata_filter: MetadataFilter | None = None,
        ttl_seconds: int = 60,
        strategy: Strategy | str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[LeasedCredential]:
        """Lease a credential for the block; release it after, reporting how it went.

        Raises:
            LeaseRefusedError: nothing can be leased (a subclass says why).
        """

        async def give_back(lease: LeasedCredential, outcome: str, retry_after: int | None) -> None:
            await self.release(lease.lease_id, outcome, retry_after)

        return hold_async(
            lambda: self.lease(
                provider,
                environment=environment,
                tags=tuple(tags),
                metadata_filter=metadata_filter,
                ttl_seconds=ttl_seconds,
                strategy=strategy,
            ),
            give_back,
            _GONE,
        )


def _refusal(exc: errors.LeaseRefusedError) -> sdk.APIError:
    """The SDK's exception for a refusal, so both modes raise the same classes.

    It is the one the SDK makes of the server's answer to the same refusal: the status comes
    from the API's one table (``keyplane.api.problems``), the class from the SDK's rule.
    """
    status = status_for(exc)
    body = {"code": exc.code, "detail": exc.message, "retry_after": exc.retry_after}
    error = error_for(status, exc.code, exc.message, body, exc.retry_after)
    if not isinstance(error, LeaseRefusedError):
        error = LeaseRefusedError(status, exc.code, exc.message, body)
    error.retry_after = exc.retry_after
    return error


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
        """The first 100 credentials matching ``filters``, with their usage."""
        return await self.service.list(self.principal, filters or CredentialFilter(), None, 100)

    async def lease(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: tuple[str, ...] = (),
        metadata_filter: MetadataFilter | None = None,
        ttl_seconds: int = 60,
        strategy: Strategy | str | None = None,
    ) -> LeasedCredential:
        """Lease a credential by strategy (release it, or use :meth:`use_key`)."""
        request = LeaseRequest(
            provider=provider,
            environment=environment,
            tags=tags,
            metadata_filter=dict(metadata_filter or {}),
            ttl=timedelta(seconds=ttl_seconds),
            strategy=None if strategy is None else Strategy(strategy),
        )
        try:
            taken = await self.service.lease(self.principal, request)
        except errors.LeaseRefusedError as exc:
            raise _refusal(exc) from None
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
        self, lease_id: str, outcome: Outcome | str = Outcome.OK, retry_after: int | None = None
    ) -> None:
        """Give a lease back, reporting how the call went."""
        await self.service.release(self.principal, lease_id, Outcome(outcome), retry_after)


@contextlib.asynccontextmanager
async def open_vault(
    settings: Settings | None = None, clock: Clock | None = None
) -> AsyncIterator[Vault]:
    """Open the vault of the database ``settings`` name (``KEYPLANE_*`` when omitted).

    Needs the same vault master key as the server (``KEYPLANE_VAULT_KEY``). Migrates the
    schema first when ``migrate_on_start`` is set, like the server.
    """
    settings = settings or Settings()
    # Built by the composition root, like the server's vault (same store, keyring, strategy).
    async with open_vault_service(settings, clock or SystemClock()) as (service, org):
        principal = Principal(
            key_id="library", org_id=org.id, project_id=None, scopes=("vault:*",), is_root=True
        )
        yield Vault(service, principal)


class _Through(httpx.AsyncBaseTransport):
    """Sends the SDK's requests through a caller's own httpx client (its transport, pool)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._client.send(request)


class RemoteVault(_LeasingBase):
    """The vault of a Keyplane server, through the SDK, with a ``vault:lease`` management key.

    Args:
        base_url: the server, e.g. ``https://keyplane.internal:8400``; ``KEYPLANE_URL`` when
            empty.
        management_key: a management key holding ``vault:lease``; ``KEYPLANE_MANAGEMENT_KEY``
            when None.
        client: an SDK :class:`~keyplane.client.AsyncClient` to use as it is, or an httpx
            client to send through (its base URL and ``Authorization`` header are used when
            ``base_url`` / ``management_key`` are not given). Either stays open on close.
        timeout: seconds for each attempt, for a client made here.
    """

    def __init__(
        self,
        base_url: str = "",
        management_key: str | None = None,
        *,
        client: sdk.AsyncClient | httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._owns_client = not isinstance(client, sdk.AsyncClient)
        if isinstance(client, sdk.AsyncClient):
            self.client = client
        elif isinstance(client, httpx.AsyncClient):
            auth = client.headers.get("Authorization", "")
            key = management_key or auth.removeprefix("Bearer ").strip() or None
            self.client = sdk.AsyncClient(
                base_url or str(client.base_url),
                key,
                timeout=timeout,
                transport=_Through(client),
            )
        else:
            self.client = sdk.AsyncClient(base_url or None, management_key, timeout=timeout)

    async def __aenter__(self) -> RemoteVault:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the SDK client if this vault made it."""
        if self._owns_client:
            await self.client.aclose()

    async def lease(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: tuple[str, ...] = (),
        metadata_filter: MetadataFilter | None = None,
        ttl_seconds: int = 60,
        strategy: Strategy | str | None = None,
    ) -> LeasedCredential:
        """Lease a credential by strategy (release it, or use :meth:`use_key`)."""
        taken = await self.client.vault.lease(
            provider,
            environment=environment,
            tags=tags,
            metadata_filter=metadata_filter,
            ttl_seconds=ttl_seconds,
            strategy=None if strategy is None else str(Strategy(strategy)),
        )
        return LeasedCredential(
            taken.lease_id,
            taken.credential_id,
            taken.provider,
            taken.alias,
            taken.secret,
            taken.environment,
            taken.expires_at,
        )

    async def release(
        self, lease_id: str, outcome: Outcome | str = Outcome.OK, retry_after: int | None = None
    ) -> None:
        """Give a lease back, reporting how the call went."""
        await self.client.vault.release(lease_id, str(Outcome(outcome)), retry_after)


# -- the process-wide default vault -----------------------------------------------------------

_default: _LeasingBase | None = None
_default_exit: contextlib.AsyncExitStack | None = None
_default_lock: asyncio.Lock | None = None


def configure(vault: Vault | RemoteVault | None) -> None:
    """Make ``vault`` the one :func:`use_key` uses (None: open one again on next use).

    The caller keeps ownership of a vault given here: :func:`close` forgets it, never closes it.
    """
    global _default, _default_exit
    _default, _default_exit = vault, None


async def _opened() -> _LeasingBase:
    global _default, _default_exit, _default_lock
    if _default is not None:
        return _default
    # Two tasks using the vault for the first time at once must not open two.
    _default_lock = _default_lock or asyncio.Lock()
    async with _default_lock:
        if _default is None:
            stack = contextlib.AsyncExitStack()
            vault: _LeasingBase
            if os.environ.get("KEYPLANE_URL"):
                vault = await stack.enter_async_context(RemoteVault())
            else:
                vault = await stack.enter_async_context(open_vault(Settings()))
            _default, _default_exit = vault, stack
        return _default


async def close() -> None:
    """Close the default vault if :func:`use_key` opened it, and forget it either way.

    Call it before the event loop ends (an in-process vault's database pool belongs to it).
    """
    global _default, _default_exit, _default_lock
    stack, _default, _default_exit, _default_lock = _default_exit, None, None, None
    if stack is not None:
        await stack.aclose()


@contextlib.asynccontextmanager
async def use_key(
    provider: str,
    *,
    environment: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    metadata_filter: MetadataFilter | None = None,
    ttl_seconds: int = 60,
    strategy: Strategy | str | None = None,
) -> AsyncIterator[LeasedCredential]:
    """Lease a credential from the default vault for the block (see the module docstring).

    Raises:
        LeaseRefusedError: nothing can be leased (a subclass says why).
    """
    vault = await _opened()
    async with vault.use_key(
        provider,
        environment=environment,
        tags=tags,
        metadata_filter=metadata_filter,
        ttl_seconds=ttl_seconds,
        strategy=strategy,
    ) as credential:
        yield credential
