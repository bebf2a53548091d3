"""The Keyplane Python SDK: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

It depends on httpx and pydantic only; nothing of the server is imported, so applications can
install Keyplane and use the SDK without pulling in FastAPI or SQLAlchemy at import time.

Example::

    from keyplane.client import Client, NotFoundError

    with Client("https://keys.example.com", management_key="kp_mgmt_...") as keyplane:
        created = keyplane.keys.create("acme prod", owner="cust_42", scopes=["chat"])
        verdict = keyplane.verify(created.key, scopes=["chat"])
        assert verdict.valid
"""

from keyplane.client._calls import (
    CredentialChanges,
    CredentialFields,
    CredentialFilters,
    KeyChanges,
    KeyFields,
    KeyFilters,
    PlanChanges,
)
from keyplane.client._core import DEFAULT_URL, Call, RetryPolicy
from keyplane.client.aio import AsyncClient
from keyplane.client.errors import (
    AllAtMaxConcurrencyError,
    AllRateLimitedError,
    APIError,
    AuthenticationError,
    ConflictError,
    ConnectionError,
    KeyplaneError,
    LeaseRefusedError,
    NoCredentialError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TimeoutError,
    ValidationError,
)
from keyplane.client.models import (
    Ack,
    Credential,
    CredentialStats,
    CredentialUsage,
    Delivery,
    DeliveryAttempt,
    DeliveryRef,
    Event,
    Health,
    Key,
    KeyCreated,
    Lease,
    LeaseReleased,
    Limit,
    ManagementKey,
    ManagementKeyCreated,
    Page,
    Plan,
    Project,
    ProviderStats,
    Signature,
    SigningSecret,
    SigningSecretCreated,
    Usage,
    UsageRecorded,
    Verdict,
    Webhook,
)
from keyplane.client.outcomes import Outcome, RateLimited, Unauthorized, outcome_of
from keyplane.client.sync import Client
from keyplane.client.vault import AsyncVault, Vault

__all__ = [
    "DEFAULT_URL",
    "APIError",
    "Ack",
    "AllAtMaxConcurrencyError",
    "AllRateLimitedError",
    "AsyncClient",
    "AsyncVault",
    "AuthenticationError",
    "Call",
    "Client",
    "ConflictError",
    "ConnectionError",
    "Credential",
    "CredentialChanges",
    "CredentialFields",
    "CredentialFilters",
    "CredentialStats",
    "CredentialUsage",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryRef",
    "Event",
    "Health",
    "Key",
    "KeyChanges",
    "KeyCreated",
    "KeyFields",
    "KeyFilters",
    "KeyplaneError",
    "Lease",
    "LeaseRefusedError",
    "LeaseReleased",
    "Limit",
    "ManagementKey",
    "ManagementKeyCreated",
    "NoCredentialError",
    "NotFoundError",
    "Outcome",
    "Page",
    "PermissionDeniedError",
    "Plan",
    "PlanChanges",
    "Project",
    "ProviderStats",
    "RateLimited",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "Signature",
    "SigningSecret",
    "SigningSecretCreated",
    "TimeoutError",
    "Unauthorized",
    "Usage",
    "UsageRecorded",
    "ValidationError",
    "Vault",
    "Verdict",
    "Webhook",
    "outcome_of",
]
