"""``/v1/vault``: upstream provider credentials and their leases, for both clients.

:class:`Vault` (on :class:`~keyplane.client.Client`) and :class:`AsyncVault` (on
:class:`~keyplane.client.AsyncClient`) offer the same methods; ``use_key`` is the one most
code needs::

    with keyplane.vault.use_key("openai", environment="production") as lease:
        call_openai(api_key=lease.secret)

Retries: a lease is not deduplicated by the server, so it is retried only when the request
never left (the connection could not be made); a timeout, a dropped answer or a 5xx raises at
once rather than risk holding two leases. A release is safe to repeat and is retried as usual;
when a retry finds the lease already gone, the first attempt had released it.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from keyplane.client import _calls, errors, models
from keyplane.client._calls import CredentialChanges, CredentialFields, CredentialFilters
from keyplane.client.outcomes import outcome_of

if TYPE_CHECKING:
    from keyplane.client.aio import AsyncClient
    from keyplane.client.sync import Client

L = TypeVar("L")

FilterValue = str | int | float | bool

#: Release failures that mean the lease is no longer there to free (it expired meanwhile).
GONE: tuple[type[BaseException], ...] = (errors.NotFoundError, errors.ConflictError)


@contextlib.asynccontextmanager
async def hold_async(
    take: Callable[[], Awaitable[L]],
    give_back: Callable[[L, str, int | None], Awaitable[object]],
    gone: tuple[type[BaseException], ...] = GONE,
) -> AsyncIterator[L]:
    """Hold what ``take`` leases for a block; give it back with the outcome the block implies.

    Shared by :meth:`AsyncVault.use_key` and the in-process ``keyplane.vault``: how a lease is
    given back is decided here only. A failure to give it back never hides the block's own
    exception (the lease then expires at its TTL).

    Args:
        take: Leases the credential.
        give_back: Releases it: ``(lease, outcome, retry_after)``.
        gone: Errors of ``give_back`` meaning the lease is already gone: ignored.
    """
    lease = await take()
    try:
        yield lease
    except BaseException as exc:
        outcome, retry_after = outcome_of(exc)
        try:
            await give_back(lease, outcome, retry_after)
        except gone:
            pass
        except Exception as failure:  # the block's exception matters more
            exc.add_note(f"(releasing the lease failed too: {failure})")
        raise
    with contextlib.suppress(*gone):
        await give_back(lease, "ok", None)


@contextlib.contextmanager
def hold(
    take: Callable[[], L],
    give_back: Callable[[L, str, int | None], object],
    gone: tuple[type[BaseException], ...] = GONE,
) -> Iterator[L]:
    """The blocking twin of :func:`hold_async`."""
    lease = take()
    try:
        yield lease
    except BaseException as exc:
        outcome, retry_after = outcome_of(exc)
        try:
            give_back(lease, outcome, retry_after)
        except gone:
            pass
        except Exception as failure:  # the block's exception matters more
            exc.add_note(f"(releasing the lease failed too: {failure})")
        raise
    with contextlib.suppress(*gone):
        give_back(lease, "ok", None)


class Vault:
    """``/v1/vault`` on the blocking client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        provider: str,
        alias: str,
        secret: str,
        *,
        idempotency_key: str | None = None,
        **fields: Unpack[CredentialFields],
    ) -> models.Credential:
        """Seal and store a credential; its secret is never shown again (only a hint)."""
        call = _calls.create_credential(provider, alias, secret, fields, idempotency_key)
        return self._client.send(call)

    def create_many(
        self, credentials: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> builtins.list[models.Credential]:
        """Add up to 100 credentials in one transaction: all of them or, on any error, none.

        Each item holds ``provider``, ``alias``, ``secret`` and optionally the fields of
        :class:`CredentialFields`.
        """
        items = [dict(item) for item in credentials]
        return self._client.send(_calls.create_credentials(items, idempotency_key))

    def list(
        self,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        **filters: Unpack[CredentialFilters],
    ) -> models.Page[models.Credential]:
        """One page of credentials in creation order (secrets masked)."""
        return self._client.send(_calls.list_credentials(filters, cursor, limit))

    def iterate(
        self, *, page_size: int = 100, **filters: Unpack[CredentialFilters]
    ) -> Iterator[models.Credential]:
        """Every matching credential, fetching pages as the iteration goes."""
        cursor: str | None = None
        while True:
            page = self.list(cursor=cursor, limit=page_size, **filters)
            yield from page.data
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get(self, credential_id: str) -> models.Credential:
        """One credential, its secret masked."""
        return self._client.send(_calls.get_credential(credential_id))

    def update(self, credential_id: str, **changes: Unpack[CredentialChanges]) -> models.Credential:
        """Change fields of a credential; absent fields stay as they are."""
        return self._client.send(_calls.update_credential(credential_id, changes))

    def delete(self, credential_id: str, *, hard: bool = False) -> models.Credential:
        """Revoke a credential (the record stays, masked), or erase it with ``hard=True``."""
        return self._client.send(_calls.delete_credential(credential_id, hard))

    def stats(self, credential_id: str) -> models.CredentialStats:
        """A credential's use today and this month, and what remains."""
        return self._client.send(_calls.credential_stats(credential_id))

    def provider_stats(self, provider: str) -> models.ProviderStats:
        """Use and remaining allowance of a provider's credentials, in total and each."""
        return self._client.send(_calls.provider_stats(provider))

    def lease(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: Sequence[str] = (),
        metadata_filter: Mapping[str, FilterValue] | None = None,
        ttl_seconds: int | None = None,
        strategy: str | None = None,
    ) -> models.Lease:
        """Lease a credential by strategy; release it with :meth:`release` (or use ``use_key``).

        Not retried once sent (see the module docstring).

        Raises:
            NoCredentialError: Nothing matches, or nothing has allowance left.
            AllRateLimitedError: Every match is cooling down (``retry_after``).
            AllAtMaxConcurrencyError: Every match has all its leases out.
        """
        call = _calls.lease(
            provider,
            environment=environment,
            tags=tags,
            metadata_filter=metadata_filter,
            ttl_seconds=ttl_seconds,
            strategy=strategy,
        )
        return self._client.send(call)

    def release(
        self, lease_id: str, outcome: str | None = None, retry_after: int | None = None
    ) -> models.LeaseReleased:
        """Give a lease back: ``outcome`` ``ok`` (default), ``unauthorized`` (disables the
        credential) or ``rate_limited`` (cools it down ``retry_after`` seconds, 60 by default).
        """
        return self._client.send(_calls.release(lease_id, outcome, retry_after))

    def use_key(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: Sequence[str] = (),
        metadata_filter: Mapping[str, FilterValue] | None = None,
        ttl_seconds: int | None = None,
        strategy: str | None = None,
    ) -> contextlib.AbstractContextManager[models.Lease]:
        """Lease a credential for a ``with`` block and release it after, reporting how it went.

        The outcome comes from the exception that left the block, if any (see
        :func:`~keyplane.client.outcome_of`); the exception is re-raised.
        """
        return hold(
            lambda: self.lease(
                provider,
                environment=environment,
                tags=tags,
                metadata_filter=metadata_filter,
                ttl_seconds=ttl_seconds,
                strategy=strategy,
            ),
            lambda lease, outcome, retry_after: self.release(lease.lease_id, outcome, retry_after),
        )


class AsyncVault:
    """``/v1/vault`` on the asyncio client; the same methods as :class:`Vault`, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        provider: str,
        alias: str,
        secret: str,
        *,
        idempotency_key: str | None = None,
        **fields: Unpack[CredentialFields],
    ) -> models.Credential:
        """Seal and store a credential; its secret is never shown again (only a hint)."""
        call = _calls.create_credential(provider, alias, secret, fields, idempotency_key)
        return await self._client.send(call)

    async def create_many(
        self, credentials: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> builtins.list[models.Credential]:
        """Add up to 100 credentials in one transaction: all of them or, on any error, none."""
        items = [dict(item) for item in credentials]
        return await self._client.send(_calls.create_credentials(items, idempotency_key))

    async def list(
        self,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        **filters: Unpack[CredentialFilters],
    ) -> models.Page[models.Credential]:
        """One page of credentials in creation order (secrets masked)."""
        return await self._client.send(_calls.list_credentials(filters, cursor, limit))

    async def iterate(
        self, *, page_size: int = 100, **filters: Unpack[CredentialFilters]
    ) -> AsyncIterator[models.Credential]:
        """Every matching credential, fetching pages as the iteration goes."""
        cursor: str | None = None
        while True:
            page = await self.list(cursor=cursor, limit=page_size, **filters)
            for item in page.data:
                yield item
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get(self, credential_id: str) -> models.Credential:
        """One credential, its secret masked."""
        return await self._client.send(_calls.get_credential(credential_id))

    async def update(
        self, credential_id: str, **changes: Unpack[CredentialChanges]
    ) -> models.Credential:
        """Change fields of a credential; absent fields stay as they are."""
        return await self._client.send(_calls.update_credential(credential_id, changes))

    async def delete(self, credential_id: str, *, hard: bool = False) -> models.Credential:
        """Revoke a credential (the record stays, masked), or erase it with ``hard=True``."""
        return await self._client.send(_calls.delete_credential(credential_id, hard))

    async def stats(self, credential_id: str) -> models.CredentialStats:
        """A credential's use today and this month, and what remains."""
        return await self._client.send(_calls.credential_stats(credential_id))

    async def provider_stats(self, provider: str) -> models.ProviderStats:
        """Use and remaining allowance of a provider's credentials, in total and each."""
        return await self._client.send(_calls.provider_stats(provider))

    async def lease(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: Sequence[str] = (),
        metadata_filter: Mapping[str, FilterValue] | None = None,
        ttl_seconds: int | None = None,
        strategy: str | None = None,
    ) -> models.Lease:
        """Lease a credential by strategy (see :meth:`Vault.lease`)."""
        call = _calls.lease(
            provider,
            environment=environment,
            tags=tags,
            metadata_filter=metadata_filter,
            ttl_seconds=ttl_seconds,
            strategy=strategy,
        )
        return await self._client.send(call)

    async def release(
        self, lease_id: str, outcome: str | None = None, retry_after: int | None = None
    ) -> models.LeaseReleased:
        """Give a lease back, reporting how the call went (see :meth:`Vault.release`)."""
        return await self._client.send(_calls.release(lease_id, outcome, retry_after))

    def use_key(
        self,
        provider: str,
        *,
        environment: str | None = None,
        tags: Sequence[str] = (),
        metadata_filter: Mapping[str, FilterValue] | None = None,
        ttl_seconds: int | None = None,
        strategy: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[models.Lease]:
        """Lease a credential for an ``async with`` block (see :meth:`Vault.use_key`)."""

        async def give_back(lease: models.Lease, outcome: str, retry_after: int | None) -> None:
            await self.release(lease.lease_id, outcome, retry_after)

        return hold_async(
            lambda: self.lease(
                provider,
                environment=environment,
                tags=tags,
                metadata_filter=metadata_filter,
                ttl_seconds=ttl_seconds,
                strategy=strategy,
            ),
            give_back,
        )


__all__ = ["AsyncVault", "Vault", "hold", "hold_async"]
