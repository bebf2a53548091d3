"""Seed 002's ``api-service-handler`` package on Keyplane's vault: change one import.

``from api_service_handler.client import APIServiceHandler`` becomes
``from keyplane.compat.api_service_handler.client import APIServiceHandler`` (or from this
package); ``models``, ``exceptions`` and ``enums`` are here under the same names, and the
``ash`` command is installed with Keyplane. See docs/compatibility.md for what differs.
"""

from __future__ import annotations

from keyplane.compat.api_service_handler.client import APIServiceHandler, provider_name
from keyplane.compat.api_service_handler.config import HandlerConfig
from keyplane.compat.api_service_handler.enums import (
    Environment,
    KeyStatus,
    Provider,
    RotationStrategy,
    StorageBackend,
)
from keyplane.compat.api_service_handler.exceptions import (
    APIServiceHandlerError,
    EncryptionError,
    KeyNotFoundError,
    MaxConcurrentExceededError,
    NoAvailableKeyError,
    RateLimitExceededError,
    StorageNotInitializedError,
)
from keyplane.compat.api_service_handler.models import (
    APIKey,
    BulkOperationResult,
    LeasedKey,
    UsageStats,
)

__all__ = [
    "APIKey",
    "APIServiceHandler",
    "APIServiceHandlerError",
    "BulkOperationResult",
    "EncryptionError",
    "Environment",
    "HandlerConfig",
    "KeyNotFoundError",
    "KeyStatus",
    "LeasedKey",
    "MaxConcurrentExceededError",
    "NoAvailableKeyError",
    "Provider",
    "RateLimitExceededError",
    "RotationStrategy",
    "StorageBackend",
    "StorageNotInitializedError",
    "UsageStats",
    "provider_name",
]
