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

from sqlalchemy import and_, column, func, select, table, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from keyplane.domain.envelope import Keyring, credential_aad, rewrap, unseal
from keyplane.errors import StorageError, VaultError, VaultKeyError

# Only the four columns agreed with the vault store; the rest of the row is not ours to read.
_credentials = table(
    "vault_credentials",
    column("id"),
    column("org_id"),
    column("sealed_secret"),
    column("master_key_id"),
)
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


async def count_by_key(engine: AsyncEngine) -> dict[str, int]:
    """How many credentials each master key id seals (revoked ones included).

    Raises:
        StorageError: the database cannot be read, or has no vault table yet.
    """
    statement = select(_credentials.c.master_key_id, func.count()).group_by(
        _credentials.c.master_key_id
    )
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
    except SQLAlchemyError as exc:
        raise _storage_error(exc) from exc
    except OSError as exc:
        raise StorageError(f"cannot reach the database: {exc}") from exc
    return {str(key_id): int(count) for key_id, count in rows}


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
    engine: AsyncEngine,
    keyring: Keyring,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[RotationReport], None] | None = None,
) -> RotationReport:
    """Re-wrap every credential not yet under ``keyring.current``.

    Idempotent: a re-run finds nothing to do, or finishes what an interrupted run left.

    Args:
        engine: the Keyplane database.
        keyring: the new key as current, every key still sealing rows as previous.
        batch_size: rows read and written per transaction.
        progress: called after each batch with the running totals.

    Raises:
        VaultKeyError: rows sealed with a key that is not in the keyring (nothing changed).
        StorageError: the database failed; batches already committed stay committed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    counts = await count_by_key(engine)
    check_keys(keyring, counts)
    current = keyring.current.key_id
    report = RotationReport(current_key_id=current, already_current=counts.get(current, 0))
    failed_ids: set[str] = set()
    try:
        for _ in range(MAX_PASSES):
            changed_before = report.changed
            await _one_pass(engine, keyring, batch_size, report, failed_ids, progress)
            if report.changed == changed_before:
                break
        after = await count_by_key(engine)
    except SQLAlchemyError as exc:
        raise _storage_error(exc) from exc
    except OSError as exc:
        raise StorageError(f"cannot reach the database: {exc}") from exc
    report.remaining = sum(n for key_id, n in after.items() if key_id != current)
    return report


async def _one_pass(
    engine: AsyncEngine,
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
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        _credentials.c.id,
                        _credentials.c.org_id,
                        _credentials.c.sealed_secret,
                        _credentials.c.master_key_id,
                    )
                    .where(_credentials.c.master_key_id != current, _credentials.c.id > after_id)
                    .order_by(_credentials.c.id)
                    .limit(batch_size)
                )
            ).all()
        if not rows:
            return
        after_id = str(rows[-1].id)
        updates = [
            change
            for row in rows
            if str(row.id) not in failed_ids
            and (
                change := _rewrapped(
                    keyring,
                    (str(row.id), str(row.org_id), str(row.sealed_secret), str(row.master_key_id)),
                    report,
                    failed_ids,
                )
            )
            is not None
        ]
        if updates:
            async with engine.begin() as conn:
                for credential_id, old_token, old_key_id, new_token in updates:
                    result = await conn.execute(
                        update(_credentials)
                        .where(
                            and_(
                                _credentials.c.id == credential_id,
                                _credentials.c.sealed_secret == old_token,
                                _credentials.c.master_key_id == old_key_id,
                            )
                        )
                        .values(sealed_secret=new_token, master_key_id=current)
                    )
                    if result.rowcount == 1:
                        report.rewrapped += 1
                    else:
                        report.changed += 1
        if progress is not None:
            progress(report)


def _rewrapped(
    keyring: Keyring,
    row: tuple[str, str, str, str],
    report: RotationReport,
    failed_ids: set[str],
) -> tuple[str, str, str, str] | None:
    credential_id, org_id, token, old_key_id = row
    try:
        new_token = rewrap(keyring, token, credential_aad(org_id, credential_id))
    except VaultError as exc:
        # One damaged row must not block rotating the others; it is reported by id (ids are
        # not secret) and keeps its old token for an operator to look at.
        failed_ids.add(credential_id)
        report.failed.append((credential_id, exc.message))
        return None
    return credential_id, token, old_key_id, new_token


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
    engine: AsyncEngine, keyring: Keyring, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> CheckReport:
    """Open every stored secret with ``keyring`` and throw the plaintext away.

    A rotation re-wraps data keys without opening the secrets, so it cannot see a damaged
    secret ciphertext; this can, before the old key is destroyed or after a restore.

    Raises:
        StorageError: the database cannot be read, or has no vault table yet.
    """
    report = CheckReport()
    after_id = ""
    try:
        while True:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(
                            _credentials.c.id,
                            _credentials.c.org_id,
                            _credentials.c.sealed_secret,
                            _credentials.c.master_key_id,
                        )
                        .where(_credentials.c.id > after_id)
                        .order_by(_credentials.c.id)
                        .limit(batch_size)
                    )
                ).all()
            if not rows:
                return report
            after_id = str(rows[-1].id)
            for row in rows:
                credential_id, key_id = str(row.id), str(row.master_key_id)
                report.by_key[key_id] = report.by_key.get(key_id, 0) + 1
                aad = credential_aad(str(row.org_id), credential_id)
                try:
                    unseal(keyring, str(row.sealed_secret), aad)
                except VaultError as exc:
                    report.failed.append((credential_id, exc.message))
                else:
                    report.opened += 1
    except SQLAlchemyError as exc:
        raise _storage_error(exc) from exc
    except OSError as exc:
        raise StorageError(f"cannot reach the database: {exc}") from exc


def _storage_error(exc: SQLAlchemyError) -> StorageError:
    text = str(exc).lower()
    if "vault_credentials" in text and ("no such table" in text or "does not exist" in text):
        return StorageError("the database has no vault table yet; run `keyplane migrate` first")
    return StorageError(f"database failed: {exc.__class__.__name__}")
