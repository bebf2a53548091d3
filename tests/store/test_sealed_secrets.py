"""The ``SealedSecretStore`` contract (``db.sealed_secrets``), on SQLite and PostgreSQL."""

from __future__ import annotations

from keyplane.store.database import Database as Db
from keyplane.store.vault_sealed import Rewrap
from tests.store.conftest import other_tenancy, tenancy
from tests.store.test_vault_store import _credential


async def test_sealed_secrets_count_page_and_compare_and_set(db: Db) -> None:
    org, _ = await tenancy(db)
    other, _ = await other_tenancy(db)
    records = [_credential(org, f"c{n}", master_key_id="old") for n in range(3)]
    records.append(_credential(other, "theirs", master_key_id="new"))
    await db.vault.create_credentials(records[:3])
    await db.vault.create_credentials(records[3:])
    assert await db.sealed_secrets.count_by_key() == {"old": 3, "new": 1}
    everything = await db.sealed_secrets.page("", 10)
    assert [s.credential_id for s in everything] == sorted(r.id for r in records)
    first = await db.sealed_secrets.page("", 2, not_key="new")
    rest = await db.sealed_secrets.page(first[-1].credential_id, 2, not_key="new")
    assert {s.credential_id for s in first + rest} == {r.id for r in records[:3]}
    assert all(s.master_key_id == "old" for s in first + rest)
    one, two = first
    matched = await db.sealed_secrets.rewrap(
        [
            Rewrap(one.credential_id, one.sealed_secret, "old", "token-1"),
            # Changed meanwhile (another token): not overwritten.
            Rewrap(two.credential_id, "stale-token", "old", "token-2"),
        ],
        "new",
    )
    assert matched == 1
    assert await db.sealed_secrets.count_by_key() == {"old": 2, "new": 2}
    after = {s.credential_id: s for s in await db.sealed_secrets.page("", 10)}
    assert (after[one.credential_id].sealed_secret, after[one.credential_id].master_key_id) == (
        "token-1",
        "new",
    )
    assert after[two.credential_id].sealed_secret == two.sealed_secret
    assert await db.sealed_secrets.rewrap([], "new") == 0
