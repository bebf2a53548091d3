"""Group commit of vault leases and releases: batches keep every limit and isolate failures."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pytest

from keyplane.domain import envelope
from keyplane.domain.clock import SystemClock
from keyplane.domain.tenancy import Principal
from keyplane.domain.vault import Choice, CredentialRecord, Strategy
from keyplane.errors import (
    AllAtMaxConcurrencyError,
    NoCredentialError,
    NotFoundError,
    StorageError,
)
from keyplane.services.vault import LeaseRequest, NewCredential, VaultService
from keyplane.store.vault import CredentialFilter, Lease, LeaseAsk, SqlVaultStore
from keyplane.vault import Vault, open_vault
from tests.conftest import Database

OPENAI = LeaseRequest(provider="openai")


async def _add(vault: Vault, count: int, **fields: object) -> list[str]:
    return [
        await vault.add("openai", f"key-{n}", f"sk-batch-{n:04d}-xxxxxxxx", **fields)
        for n in range(count)
    ]


async def _lease_all(service: VaultService, principal: Principal, count: int) -> list[object]:
    return await asyncio.gather(
        *(service.lease(principal, OPENAI) for _ in range(count)), return_exceptions=True
    )


async def test_concurrent_leases_share_transactions_and_keep_max_concurrent(
    database: Database,
) -> None:
    async with open_vault(database.settings()) as vault:
        service, principal = vault.service, vault.principal
        await _add(vault, 3, max_concurrent=2)
        before = service._batcher.transactions
        results = await _lease_all(service, principal, 20)
        leases = [r for r in results if isinstance(r, Lease)]
        refused = [r for r in results if isinstance(r, AllAtMaxConcurrencyError)]
        assert (len(leases), len(refused)) == (6, 14), results
        # Round robin inside a batch, as one by one: each credential twice.
        assert Counter(lease.credential.id for lease in leases) == dict.fromkeys(
            {lease.credential.id for lease in leases}, 2
        )
        assert service._batcher.transactions - before < 20  # they shared transactions

        before = service._batcher.transactions
        released = await asyncio.gather(*(service.release(principal, x.id) for x in leases))
        assert {record.id for record in released} == {lease.credential.id for lease in leases}
        assert service._batcher.transactions - before < len(leases)
        # Each release freed its slot, and a second release of the same lease is refused.
        live = await service._store.live_leases(sorted(released_ids(leases)), now())
        assert sum(live.values()) == 0
        with pytest.raises(NotFoundError):
            await service.release(principal, leases[0].id)


async def test_a_daily_limit_holds_exactly_within_and_across_batches(database: Database) -> None:
    async with open_vault(database.settings()) as vault:
        service, principal = vault.service, vault.principal
        [only] = await _add(vault, 1, daily_limit=7)
        results = await _lease_all(service, principal, 12)
        leases = [r for r in results if isinstance(r, Lease)]
        assert len(leases) == 7
        assert all(isinstance(r, NoCredentialError) for r in results if not isinstance(r, Lease))
        await asyncio.gather(*(service.release(principal, x.id) for x in leases))
        # Released, the allowance stays spent.
        with pytest.raises(NoCredentialError):
            await service.lease(principal, OPENAI)
        stats = await service.get(principal, only)
        assert stats.daily_used == 7


async def test_a_secret_that_does_not_open_fails_only_its_own_lease(database: Database) -> None:
    async with open_vault(database.settings()) as vault:
        await _add(vault, 2)
        store = vault.service._store
        ring = vault.service._ring()

        def opens(record: CredentialRecord) -> str:
            return envelope.unseal(
                ring, record.sealed_secret, envelope.credential_aad(record.org_id, record.id)
            )

        def fails(record: CredentialRecord) -> str:
            raise RuntimeError("this ask's key material is wrong")

        def ask(open_secret: object) -> LeaseAsk:
            return LeaseAsk(
                vault.principal.org_id,
                CredentialFilter(provider="openai"),
                Strategy.ROUND_ROBIN,
                timedelta(seconds=60),
                open_secret,  # type: ignore[arg-type]
            )

        answers, _ = await store.lease_batch(
            [ask(opens), ask(fails), ask(opens)], {}, now(), random.Random(1)
        )
        assert isinstance(answers[0], Lease) and isinstance(answers[2], Lease)
        assert isinstance(answers[1], RuntimeError)
        # The failed ask took no use and no slot: two leases, one on each credential.
        assert answers[0].credential.id != answers[2].credential.id
        listed = await vault.list()
        assert sorted(item.record.total_count for item in listed) == [1, 1]
        assert sum(item.live_leases for item in listed) == 2


class _FailsOnPoison(SqlVaultStore):
    """The real store, failing every transaction that carries a release of ``poison``
    (standing in for a database error caused by one request)."""

    poison = "lease_" + "0" * 26
    calls: list[int]

    async def lease_batch(
        self,
        asks: Sequence[LeaseAsk],
        releases: Mapping[str, Sequence[str]],
        now: datetime,
        rng: random.Random | None = None,
    ) -> tuple[list[Lease | Choice | Exception], dict[str, CredentialRecord]]:
        self.calls.append(len(asks) + sum(len(ids) for ids in releases.values()))
        if any(self.poison in ids for ids in releases.values()):
            raise StorageError("database write failed")
        return await super().lease_batch(asks, releases, now, rng)


async def test_a_failed_batch_is_retried_one_by_one_so_only_its_culprit_fails(
    database: Database,
) -> None:
    async with open_vault(database.settings()) as vault:
        await _add(vault, 2)
        real = vault.service._store
        flaky = _FailsOnPoison(real._unit, real._tenancy)
        flaky.calls = []
        service = VaultService(flaky, vault.service._ring(), SystemClock())
        results = await asyncio.gather(
            *(service.lease(vault.principal, OPENAI) for _ in range(4)),
            service.release(vault.principal, _FailsOnPoison.poison),
            return_exceptions=True,
        )
        assert all(isinstance(r, Lease) for r in results[:4]), results
        assert isinstance(results[4], StorageError)
        # One batch of five failed; then each request alone.
        assert flaky.calls == [5, 1, 1, 1, 1, 1]
        listed = await vault.list()
        assert sum(item.live_leases for item in listed) == 4


async def test_bulk_added_credentials_lease_in_batches_across_filters(database: Database) -> None:
    async with open_vault(database.settings()) as vault:
        service, principal = vault.service, vault.principal
        await service.add_many(
            principal,
            [
                NewCredential("openai", "prod", "sk-prod-000000000000", environment="production"),
                NewCredential("openai", "dev", "sk-dev-0000000000000", environment="dev"),
            ],
        )
        prod = LeaseRequest(provider="openai", environment="production")
        dev = LeaseRequest(provider="openai", environment="dev")
        results = await asyncio.gather(
            *(service.lease(principal, prod if n % 2 else dev) for n in range(10))
        )
        for n, lease in enumerate(results):
            assert lease.credential.alias == ("prod" if n % 2 else "dev")


def now() -> datetime:
    return SystemClock().now()


def released_ids(leases: Sequence[Lease]) -> set[str]:
    return {lease.credential.id for lease in leases}


async def test_an_unknown_release_in_a_batch_fails_alone(database: Database) -> None:
    async with open_vault(database.settings()) as vault:
        service, principal = vault.service, vault.principal
        await _add(vault, 2)
        leases = await asyncio.gather(*(service.lease(principal, OPENAI) for _ in range(3)))
        results = await asyncio.gather(
            *(service.release(principal, lease.id) for lease in leases),
            service.release(principal, "lease_" + "1" * 26),
            service.release(principal, leases[0].id),  # the same lease twice in one batch
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results[:3]] == ["CredentialRecord"] * 3
        assert isinstance(results[3], NotFoundError)
        # Released once: whichever of the two came second is refused, never both served.
        assert sum(isinstance(r, NotFoundError) for r in (results[0], results[4])) == 1


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_transaction(
    database: Database,
) -> None:
    async with open_vault(database.settings()) as vault:
        service, principal = vault.service, vault.principal
        await _add(vault, 1)
        tasks = [asyncio.create_task(service.lease(principal, OPENAI)) for _ in range(4)]
        await asyncio.sleep(0)  # all four are queued
        tasks[0].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError)
        assert all(isinstance(lease, Lease) for lease in done[1:])
        # The cancelled caller's lease was written with the others; it expires by itself.
        [item] = await vault.list()
        assert (item.live_leases, item.record.total_count) == (4, 4)
