"""Keyplane's exceptions.

::

    KeyplaneError                 root; ``code`` is a stable string clients can switch on
                                  (a class without a code of its own has its parent's)
    ├── ValidationError           input that breaks a rule the schema cannot express
    │   └── WebhookVerificationError  a webhook's signature, id or timestamp does not hold
    ├── AuthenticationError       no, malformed or unknown management credential
    ├── PermissionDeniedError     a valid credential without the needed scope or reach
    ├── NotFoundError             no such object (or not visible to the caller)
    │   └── KeyNotFoundError      seed 002's name: no such upstream key (compat handler)
    ├── ConflictError             the object's state forbids the operation
    │   └── StorageNotInitializedError  seed 002's: the handler is used before initialize()
    ├── ConfigurationError        settings that cannot work together
    │   ├── VaultNotConfiguredError   no vault master key: nothing can be sealed or opened
    │   └── ExportUnavailableError    an export format whose library is not installed
    ├── StorageError              a backend failed; wraps the driver's exception
    │   ├── LimiterUnavailableError   the shared limiter (Redis) failed; wraps redis' exception
    │   ├── CountersUnsettledError    a budget counter could not be seeded or its marker renewed
    │   └── RegistryUnavailableError  cache invalidation or the instance registry failed
    ├── VaultError                a sealed upstream credential cannot be opened
    │   ├── VaultKeyError         sealed with a master key that is not configured
    │   ├── VaultIntegrityError   altered, moved to another row, or wrong key material
    │   └── EncryptionError       seed 002's name: a stored key does not open with this secret
    ├── CapacityError             this instance is at a configured capacity (usage streams)
    ├── EmailDeliveryError        the SMTP server could not be reached or refused a message
    └── LeaseRefusedError         no upstream credential can be leased now (``retry_after``)
        ├── NoCredentialError             none matches, or none has allowance left
        │   └── NoAvailableKeyError       seed 002's name: none matches, none usable
        ├── AllRateLimitedError           every usable match is cooling down
        ├── RateLimitExceededError        seed 002's: every match is cooling down or out of
        │                                 its daily/monthly allowance
        └── AllAtMaxConcurrencyError      every usable match has all its leases out
            └── MaxConcurrentExceededError    seed 002's name for the same refusal

Every class Keyplane raises for a domain or service reason is defined here (a test walks the
package and holds this drawing to it). Driver exceptions (SQLAlchemy, asyncpg, redis) do not
leave the adapter that met them: it raises a :class:`StorageError` ``from`` them.

The classes named after seed 002's (``api-service-handler``) are what its drop-in,
``keyplane.compat.api_service_handler``, raises: its users keep their ``except`` clauses.

HTTP statuses are attached in one place only: ``keyplane.api.problems``. The library's
``keyplane.vault`` raises the SDK's own classes (``keyplane.client.errors``), a separate tree.
"""

from __future__ import annotations

from typing import Any


class KeyplaneError(Exception):
    code = "ERROR"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra


class ValidationError(KeyplaneError):
    code = "VALIDATION_FAILED"


class WebhookVerificationError(ValidationError):
    """A received webhook does not verify: headers missing or malformed, its timestamp outside
    the tolerance, or no signature made with the secret (``keyplane.webhooks.verify``)."""

    code = "WEBHOOK_VERIFICATION_FAILED"


class AuthenticationError(KeyplaneError):
    code = "UNAUTHENTICATED"


class PermissionDeniedError(KeyplaneError):
    code = "FORBIDDEN"


class NotFoundError(KeyplaneError):
    code = "NOT_FOUND"


class ConflictError(KeyplaneError):
    code = "CONFLICT"


class KeyNotFoundError(NotFoundError):
    """Seed 002's name: no upstream key (credential) with this id."""


class StorageNotInitializedError(ConflictError):
    """Seed 002's name: the handler is used before ``initialize()`` (or after ``close()``)."""

    code = "NOT_INITIALIZED"


class ConfigurationError(KeyplaneError):
    code = "CONFIGURATION_ERROR"


class StorageError(KeyplaneError):
    code = "STORAGE_ERROR"


class LimiterUnavailableError(StorageError):
    code = "LIMITER_UNAVAILABLE"


class CountersUnsettledError(StorageError):
    """A budget counter went missing again each time it was seeded, or a key's limit marker
    could not be renewed (the database failed). Transient: callers that can may retry.

    Its code stays ``STORAGE_ERROR``, what clients were told before it had a class here.
    """


class RegistryUnavailableError(StorageError):
    """The cache invalidation channel or the instance registry could not be reached.

    Its code stays ``STORAGE_ERROR``, what the SQL registry raised before it had a class.
    """


class VaultNotConfiguredError(ConfigurationError):
    """No vault master key is configured, so nothing can be sealed or opened."""

    code = "VAULT_NOT_CONFIGURED"


class ExportUnavailableError(ConfigurationError):
    """An audit export format whose library the server lacks (Parquet without pyarrow)."""

    code = "EXPORT_FORMAT_UNAVAILABLE"


class VaultError(KeyplaneError):
    code = "VAULT_ERROR"


class VaultKeyError(VaultError):
    code = "VAULT_KEY_MISSING"


class VaultIntegrityError(VaultError):
    code = "VAULT_INTEGRITY"


class EncryptionError(VaultError):
    """Seed 002's name: a stored key cannot be opened (another shared secret, or altered)."""

    code = "ENCRYPTION_FAILED"


class CapacityError(KeyplaneError):
    """This instance already serves as much of something as it is configured to."""

    code = "CAPACITY_EXCEEDED"


class EmailDeliveryError(KeyplaneError):
    """An email notification could not be handed to the SMTP server (services/email.py)."""

    code = "EMAIL_DELIVERY_FAILED"


class LeaseRefusedError(KeyplaneError):
    """No credential can be leased; ``retry_after`` (seconds) says when to try again."""

    code = "LEASE_REFUSED"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        extra: dict[str, Any] = {} if retry_after is None else {"retry_after": retry_after}
        super().__init__(message, **extra)
        self.retry_after = retry_after


class NoCredentialError(LeaseRefusedError):
    """None matches, or every match is disabled, revoked or out of its allowance."""

    code = "NO_CREDENTIAL"


class AllRateLimitedError(LeaseRefusedError):
    """Every usable match is cooling down after a rate-limited outcome."""

    code = "ALL_RATE_LIMITED"


class AllAtMaxConcurrencyError(LeaseRefusedError):
    """Every usable match already has ``max_concurrent`` live leases."""

    code = "ALL_AT_MAX_CONCURRENCY"


class NoAvailableKeyError(NoCredentialError):
    """Seed 002's name: no key matches, or none is usable (disabled, revoked, limit 0)."""


class RateLimitExceededError(LeaseRefusedError):
    """Seed 002's name: every match is cooling down or out of its daily/monthly allowance."""

    code = "RATE_LIMIT_EXCEEDED"


class MaxConcurrentExceededError(AllAtMaxConcurrencyError):
    """Seed 002's name: every usable match already has ``max_concurrent`` keys in use."""
