"""The string enums of seed 002's package that its callers pass (``Environment.PRODUCTION``)."""

from __future__ import annotations

import enum


class Environment(enum.StrEnum):
    """Deployment environment a key is meant for (any Keyplane environment name works too)."""

    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"
    TESTING = "testing"


class KeyStatus(enum.StrEnum):
    """A key's status in the seed's words (Keyplane's ``disabled`` reads ``inactive``, its
    ``cooling_down`` reads ``rate_limited``)."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    RATE_LIMITED = "rate_limited"
    EXPIRED = "expired"
    REVOKED = "revoked"


class RotationStrategy(enum.StrEnum):
    """How the next key is picked (Keyplane's :class:`~keyplane.domain.vault.Strategy`)."""

    ROUND_ROBIN = "round_robin"
    LEAST_USED = "least_used"
    RANDOM = "random"
    WEIGHTED = "weighted"


class StorageBackend(enum.StrEnum):
    """Where keys are kept. ``mongodb`` is not offered: Keyplane stores in SQL only."""

    MEMORY = "memory"
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"
