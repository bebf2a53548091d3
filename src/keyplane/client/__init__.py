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

from keyplane.client._calls import KeyChanges, KeyFields, KeyFilters, PlanChanges
from keyplane.client._core import DEFAULT_URL, Call, RetryPolicy
from keyplane.client.aio import AsyncClient
from keyplane.client.errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    ConnectionError,
    KeyplaneError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TimeoutError,
    ValidationError,
)
from keyplane.client.models import (
    Event,
    Health,
    Key,
    KeyCreated,
    Limit,
    ManagementKey,
    ManagementKeyCreated,
    Page,
    Plan,
    Project,
    Usage,
    UsageRecorded,
    Verdict,
)
from keyplane.client.sync import Client

__all__ = [
    "DEFAULT_URL",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Call",
    "Client",
    "ConflictError",
    "ConnectionError",
    "Event",
    "Health",
    "Key",
    "KeyChanges",
    "KeyCreated",
    "KeyFields",
    "KeyFilters",
    "KeyplaneError",
    "Limit",
    "ManagementKey",
    "ManagementKeyCreated",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "Plan",
    "PlanChanges",
    "Project",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "TimeoutError",
    "Usage",
    "UsageRecorded",
    "ValidationError",
    "Verdict",
]
