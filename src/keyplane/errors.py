"""Keyplane's exceptions.

::

    KeyplaneError                 root; ``code`` is a stable string clients can switch on
    ├── ValidationError           input that breaks a rule the schema cannot express
    ├── AuthenticationError       no, malformed or unknown management credential
    ├── PermissionDeniedError     a valid credential without the needed scope or reach
    ├── NotFoundError             no such object (or not visible to the caller)
    ├── ConflictError             the object's state forbids the operation
    ├── ConfigurationError        settings that cannot work together
    ├── StorageError              the database failed; wraps the driver's exception
    │   └── LimiterUnavailableError   the shared limiter (Redis) failed; wraps redis' exception
    └── VaultError                a sealed upstream credential cannot be opened
        ├── VaultKeyError         sealed with a master key that is not configured
        └── VaultIntegrityError   altered, moved to another row, or wrong key material

HTTP statuses are attached in one place only: ``keyplane.api.problems``.
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


class AuthenticationError(KeyplaneError):
    code = "UNAUTHENTICATED"


class PermissionDeniedError(KeyplaneError):
    code = "FORBIDDEN"


class NotFoundError(KeyplaneError):
    code = "NOT_FOUND"


class ConflictError(KeyplaneError):
    code = "CONFLICT"


class ConfigurationError(KeyplaneError):
    code = "CONFIGURATION_ERROR"


class StorageError(KeyplaneError):
    code = "STORAGE_ERROR"


class LimiterUnavailableError(StorageError):
    code = "LIMITER_UNAVAILABLE"


class VaultError(KeyplaneError):
    code = "VAULT_ERROR"


class VaultKeyError(VaultError):
    code = "VAULT_KEY_MISSING"


class VaultIntegrityError(VaultError):
    code = "VAULT_INTEGRITY"
