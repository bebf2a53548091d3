"""Gateway integration: let only requests with a usable API key through.

- ``/v1/auth`` (in :mod:`keyplane.api.routes.auth`) for nginx, Traefik and Envoy;
- :class:`KeyAuthMiddleware` (ASGI) and :func:`require_key` (FastAPI) for Python services,
  verifying in-process (:class:`InProcessVerifier`) or against a Keyplane server
  (:class:`RemoteVerifier`, through the SDK).

See docs/gateway.md.
"""

from keyplane.integrations.asgi import KeyAuthMiddleware
from keyplane.integrations.decision import AuthRequest, Decision, KeyVerifier, Limit
from keyplane.integrations.dependencies import KeyRefused, install, require_key
from keyplane.integrations.guard import KeyGuard
from keyplane.integrations.remote import RemoteVerifier
from keyplane.integrations.verifiers import InProcessVerifier

__all__ = [
    "AuthRequest",
    "Decision",
    "InProcessVerifier",
    "KeyAuthMiddleware",
    "KeyGuard",
    "KeyRefused",
    "KeyVerifier",
    "Limit",
    "RemoteVerifier",
    "install",
    "require_key",
]
