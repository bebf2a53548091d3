"""Drop-in compatibility surfaces: other vendors' key-provisioning APIs over Keyplane's data.

Each surface is a router with its own error format (ParrotRouter, which documents none,
answers problem+json) (see :mod:`.errors`) and a pure mapping
module that translates between the vendor's fields and Keyplane's (see docs/compatibility.md).
"""

from keyplane.api.body_limit import TooLargeRenderer
from keyplane.api.compat import fastrouter, openrouter, parrotrouter
from keyplane.api.compat.errors import too_large

ROUTERS = (openrouter.router, fastrouter.router, parrotrouter.router)
#: Oversized bodies on each surface, answered in its own format.
TOO_LARGE: tuple[TooLargeRenderer, ...] = (
    ("/api/v1/", too_large(openrouter.render)),
    ("/prod/", too_large(fastrouter.render)),
)
