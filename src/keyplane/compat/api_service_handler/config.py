"""The handler's settings: constructor arguments first, then ``ASH_*`` environment variables.

Recognised variables (as seed 002's package reads them): ``ASH_STORAGE_BACKEND``,
``ASH_CONNECTION_STRING``, ``ASH_SHARED_SECRET``, ``ASH_ENCRYPT_KEYS``,
``ASH_ROTATION_STRATEGY``, ``ASH_AUTO_RESET_COUNTERS``, ``ASH_SOFT_DELETE``,
``ASH_DEFAULT_DAILY_LIMIT``, ``ASH_DEFAULT_MONTHLY_LIMIT``, ``ASH_DEFAULT_MAX_CONCURRENT``.
Every other Keyplane setting (``KEYPLANE_DATABASE_SCHEMA``, pool sizes...) is read as usual.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pydantic
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keyplane.compat.api_service_handler.enums import RotationStrategy, StorageBackend
from keyplane.errors import ConfigurationError

#: Shortest shared secret accepted: it is the only input of the vault master key.
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 1024
#: Fixed salt of the shared-secret derivation: the same secret must give the same master key
#: on every start and every instance (a random salt would need storing next to the data).
_SALT = b"keyplane/compat/api-service-handler/master-key/v1"


class HandlerConfig(BaseSettings):
    """What ``APIServiceHandler(...)`` and ``ash`` are configured with."""

    model_config = SettingsConfigDict(env_prefix="ASH_", extra="forbid")

    storage_backend: StorageBackend = StorageBackend.MEMORY
    connection_string: str = Field(default="", max_length=4096)
    shared_secret: SecretStr | None = None
    #: Keyplane always seals keys at rest; ``False`` is accepted and changes nothing.
    encrypt_keys: bool = True
    rotation_strategy: RotationStrategy = RotationStrategy.ROUND_ROBIN
    #: Keyplane's counters always roll over at UTC day and month starts; ``False`` is accepted
    #: and changes nothing.
    auto_reset_counters: bool = True
    soft_delete: bool = True
    default_daily_limit: int | None = Field(default=None, ge=0, le=2**53 - 1)
    default_monthly_limit: int | None = Field(default=None, ge=0, le=2**53 - 1)
    default_max_concurrent: int | None = Field(default=None, ge=0, le=1_000_000)

    @field_validator("storage_backend", "rotation_strategy", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            if value == "postgres":
                return StorageBackend.POSTGRESQL
            if value == "mongodb":
                raise ValueError("Keyplane stores keys in SQLite or PostgreSQL, not MongoDB")
        return value

    @field_validator("shared_secret")
    @classmethod
    def _secret_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        length = len(value.get_secret_value())
        if not MIN_SECRET_LENGTH <= length <= MAX_SECRET_LENGTH:
            # The length only, never the secret.
            raise ValueError(
                f"the shared secret must be {MIN_SECRET_LENGTH}-{MAX_SECRET_LENGTH} characters"
            )
        return value

    @classmethod
    def load(cls, **given: Any) -> HandlerConfig:
        """Arguments that are not None, then ``ASH_*``, then the defaults.

        Raises:
            ConfigurationError: a value is unusable (the message names it, never a secret).
        """
        try:
            return cls(**{name: value for name, value in given.items() if value is not None})
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            raise ConfigurationError(
                f"api-service-handler setting {where}: {first['msg']}"
            ) from None

    def database_url(self, scratch: Path | None) -> str:
        """The Keyplane database URL for this backend (``scratch``: the memory backend's dir)."""
        text = self.connection_string.strip()
        if self.storage_backend is StorageBackend.MEMORY:
            if scratch is None:  # pragma: no cover - the handler always gives one
                raise ConfigurationError("the memory backend needs a scratch directory")
            return f"sqlite:///{scratch / 'keys.db'}"
        if self.storage_backend is StorageBackend.SQLITE:
            if not text:
                return "sqlite:///api_keys.db"
            if text.startswith("sqlite"):
                return text
            if "://" in text:
                raise ConfigurationError("the sqlite backend takes sqlite:///<path> or a path")
            return f"sqlite:///{text}"
        if not text.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ConfigurationError(
                "the postgresql backend needs ASH_CONNECTION_STRING=postgresql://user@host/db"
            )
        return text


def master_key_of(shared_secret: SecretStr) -> str:
    """Keyplane's vault master key (base64 of 32 bytes) derived from the shared secret.

    scrypt makes guessing a weak secret costly; the keys themselves are then sealed with
    Keyplane's envelope encryption (a data key per credential, wrapped by this master key).
    """
    derived = hashlib.scrypt(
        shared_secret.get_secret_value().encode("utf-8"),
        salt=_SALT,
        n=2**14,
        r=8,
        p=1,
        dklen=32,
    )
    return base64.b64encode(derived).decode("ascii")
