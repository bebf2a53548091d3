"""Seed 002's exception names. They live in :mod:`keyplane.errors` with the rest of the tree.

``APIServiceHandlerError`` (the seed's root) is :class:`~keyplane.errors.KeyplaneError`, so an
``except APIServiceHandlerError`` still catches every error the handler raises.
"""

from __future__ import annotations

from keyplane.errors import (
    EncryptionError,
    KeyNotFoundError,
    KeyplaneError,
    MaxConcurrentExceededError,
    NoAvailableKeyError,
    RateLimitExceededError,
    StorageNotInitializedError,
)

APIServiceHandlerError = KeyplaneError

__all__ = [
    "APIServiceHandlerError",
    "EncryptionError",
    "KeyNotFoundError",
    "MaxConcurrentExceededError",
    "NoAvailableKeyError",
    "RateLimitExceededError",
    "StorageNotInitializedError",
]
