"""The storage contract, one protocol per concept, gathered in one place.

Each protocol lives beside its SQL implementation (``store/keys.py``, ``store/usage.py``,
...) and every backend passes the per-concept contract tests in ``tests/store/``. Writes are
transactions committed before the method returns; driver errors surface as
:class:`~keyplane.errors.StorageError` (see ``store/unit.py``).
"""

from __future__ import annotations

from keyplane.store.events import EventStore
from keyplane.store.idempotency import IdempotencyRecord, IdempotencyStore
from keyplane.store.keys import KeyFilter, KeyLookup, KeyMutation, KeyStore, SecretMatch
from keyplane.store.management_keys import ManagementKeyStore
from keyplane.store.plans import PlanStore
from keyplane.store.signing_secrets import SigningSecretStore
from keyplane.store.tenancy import TenancyStore
from keyplane.store.usage import BeforeCommit, UsageStore
from keyplane.store.vault_base import VaultStore
from keyplane.store.vault_sealed import SealedSecretStore

__all__ = [
    "BeforeCommit",
    "EventStore",
    "IdempotencyRecord",
    "IdempotencyStore",
    "KeyFilter",
    "KeyLookup",
    "KeyMutation",
    "KeyStore",
    "ManagementKeyStore",
    "PlanStore",
    "SealedSecretStore",
    "SecretMatch",
    "SigningSecretStore",
    "TenancyStore",
    "UsageStore",
    "VaultStore",
]
