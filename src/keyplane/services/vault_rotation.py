"""Re-wrapping every sealed upstream credential under a new vault master key.

Runs offline against the database (``keyplane vault rotate-master``), while servers keep
serving: they are configured with the new key as current and the old one as previous, so
they open both kinds of token, and seal new secrets with the new key. Only the wrapped data
key of each row changes (``keyplane.domain.envelope.rewrap``); no plaintext secret is ever
produced here.

Each row is written with a compare-and-set on both ``sealed_secret`` and ``master_key_id``:
if a server changed the secret between our read and our write (an update re-seals it), our
write matches nothing and the row is counted as ``changed`` and looked at again in the next
pass, instead of overwriting the newer secret with a re-wrapped older one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from keyplane.domain.envelope import Keyring, credential_aad, rewrap, unseal
from keyplane.errors import VaultError, VaultKeyError
from keyplane.store.vault_sealed import Rewrap, SealedSecretStore

DEFAULT_BATCH_SIZE = 500
# A row changed under us is retried in the next pass; a few passes settle any real workload.
MAX_PASSES = 5


@dataclass
class RotationReport:
    """What a rotation did.

    Attributes:
        current_key_id: the id every rewrapped row now carries.
        rewrapped: rows moved to the current key by this run.
        already_current: rows that were on the current key before this run.
        changed: compare-and-set misses (a server wrote the row meanwhile), retried later.
        failed: ``(credential id, reason)`` for rows that could not be opened (tampered or
            bound to another row); left untouched.
        remaining: rows still not on the current key at the end (failed ones included).
    """

    current_key_id: str
    rewrapped: int = 0
    already_current: int = 0
    changed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    remaining: int = 0

    @property
    def complete(self) -> bool:
        """Every row is on the current key: the previous keys can be dropped."""
        return self.remaining == 0


async def count_by_key(store: SealedSecretStore) -> dict[str, int]:
    """How many credentials each master key id seals (revoked ones included).

    Raises:
        StorageError: the database cannot be read, or has no vault table yet.
    """
    return await store.count_by_key()


def check_keys(keyring: Keyring, counts: dict[str, int]) -> None:
    """Refuse to start when some rows are sealed with a key the keyring does not hold.

    Raises:
        VaultKeyError: naming each unknown key id and how many rows it seals.
    """
    missing = {key_id: n for key_id, n in counts.items() if key_id not in keyring.key_ids}
    if missing:
        listed = ", ".join(f"{key_id} ({n} credentials)" for key_id, n in sorted(missing.items()))
        raise VaultKeyError(
            f"sealed with master key {listed}, which is not configured; give the old key "
            "with --old-key-file or KEYPLANE_VAULT_PREVIOUS_KEYS (configured: "
            f"{', '.join(keyring.key_ids)}). Nothing was changed.",
            key_ids=sorted(missing),
        )


async def rotate_master(
    store: SealedSecretStore,
    keyring: Keyring,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[RotationReport], None] | None = None,
) -> RotationReport:
    """Re-wrap every credential not yet under ``keyring.current``.

    Idempotent: a re-run finds nothing to do, or finishes what an interrupted run left.

    Args:
        store: the sealed secrets of the Keyplane database.
        keyring: the new key as current, every key still sealing rows as previous.
        batch_size: rows read and written per transaction.
        progress: called after each batch with the running totals.

    Raises:
        VaultKeyError: rows sealed with a key that is not in the keyring (nothing changed).
        StorageError: the database failed; batches already committed stay committed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    counts = await count_by_key(store)
    check_keys(keyring, counts)
    current = keyring.current.key_id
    report = RotationReport(current_key_id=current, already_current=counts.get(current, 0))
    failed_ids: set[str] = set()
    for _ in range(MAX_PASSES):
        changed_before = report.changed
        await _one_pass(store, keyring, batch_size, report, failed_ids, progress)
        if report.changed == changed_before:
            break
    after = await count_by_key(store)
    report.remaining = sum(n for key_id, n in after.items() if key_id != current)
    return report


async def _one_pass(
    store: SealedSecretStore,
    keyring: Keyring,
    batch_size: int,
    report: RotationReport,
    failed_ids: set[str],
    progress: Callable[[RotationReport], None] | None,
) -> None:
    current = keyring.current.key_id
    after_id = ""
    while True:
        # Read, then write in a transaction of its own: the compare-and-set makes the gap
        # safe, and a write-only transaction never has to upgrade a read snapshot (which
        # SQLite refuses outright when another writer committed in between).
        rows = await store.page(after_id, batch_size, not_key=current)
        if not rows:
            return
        after_id = rows[-1].credential_id
        updates = [
            change
            for row in rows
            if row.credential_id not in failed_ids
            and (
                change := _rewrapped(
                    keyring,
                    (row.credential_id, row.org_id, row.sealed_secret, row.master_key_id),
                    report,
                    failed_ids,
                )
            )
            is not None
        ]
        if updates:
            matched = await store.rewrap(updates, current)
            report.rewrapped += matched
            report.changed += len(updates) - matched
        if progress is not None:
            progress(report)


def _rewrapped(
    keyring: Keyring,
    row: tuple[str, str, str, str],
    report: RotationReport,
    failed_ids: set[str],
) -> Rewrap | None:
    credential_id, org_id, token, old_key_id = row
    try:
        new_token = rewrap(keyring, token, credential_aad(org_id, credential_id))
    except VaultError as exc:
        # One damaged row must not block rotating the others; it is reported by id (ids are
        # not secret) and keeps its old token for an operator to look at.
        failed_ids.add(credential_id)
        report.failed.append((credential_id, exc.message))
        return None
    return Rewrap(credential_id, token, old_key_id, new_token)


@dataclass
class CheckReport:
    """What :func:`check_all` found.

    Attributes:
        opened: credentials whose secret opened with the keyring.
        by_key: credentials per master key id.
        failed: ``(credential id, reason)`` for those that did not (missing key, or an
            integrity failure: altered, or moved from another row).
    """

    opened: int = 0
    by_key: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)


async def check_all(
    store: SealedSecretStore, keyring: Keyring, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> CheckReport:
    """Open every stored secret with ``keyring`` and throw the plaintext away.

    A rotation re-wraps data keys without opening the secrets, so it cannot see a damaged
    secret ciphertext; this can, before the old key is destroyed or after a restore.

    Raises:
        StorageError: the database cannot be read, or has no vault table yet.
    """
    report = CheckReport()
    after_id = ""
    while True:
        rows = await store.page(after_id, batch_size)
        if not rows:
            return report
        after_id = rows[-1].credential_id
        for row in rows:
            credential_id, key_id = row.credential_id, row.master_key_id
            report.by_key[key_id] = report.by_key.get(key_id, 0) + 1
            aad = credential_aad(row.org_id, credential_id)
            try:
                unseal(keyring, row.sealed_secret, aad)
            except VaultError as exc:
                report.failed.append((credential_id, exc.message))
            else:
                report.opened += 1
