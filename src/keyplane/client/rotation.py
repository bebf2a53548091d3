"""Keep an application's API key current across automatic rotations, without a redeploy.

When a key's rotation policy sets ``auto_update_apps``, Keyplane rotates it on schedule and
holds the new secret for a claim by the OLD key during its grace period
(``POST /v1/self/rotation/claim``). :class:`RotatingKey` holds the key the application uses and
claims the new one when told a rotation is pending: by a verdict's ``rotation_pending``, by the
``X-Keyplane-Rotation-Pending: true`` header a gateway passes on from forward auth, or simply
on a schedule of the application's own. :class:`RotatingKeyAuth` is an ``httpx.Auth`` that
sends the current key and claims on that header by itself::

    key = RotatingKey("kp_live_...", "https://keys.example.com", on_rotated=save_to_vault)
    api = httpx.Client(base_url="https://api.example.com", auth=RotatingKeyAuth(key))

The claim succeeds once: the first caller gets the secret and the server erases it. Share one
``RotatingKey`` per process (it is thread-safe and task-safe), and persist the new key in
``on_rotated``, or a restarted process still holding the old key will be locked out when its
grace period ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Generator

import httpx

#: The header forward auth (and gateways passing it on) sets on a rotated-out key.
PENDING_HEADER = "X-Keyplane-Rotation-Pending"
CLAIM_PATH = "/v1/self/rotation/claim"


class RotatingKey:
    """An API key that swaps itself for its successor when the server holds one."""

    def __init__(
        self,
        key: str,
        base_url: str,
        *,
        on_rotated: Callable[[str], None] | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._key = key
        self._base_url = base_url.rstrip("/")
        self._on_rotated = on_rotated
        self._timeout = timeout
        self._transport = transport
        self._async_transport = async_transport
        self._lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    @property
    def current(self) -> str:
        """The key to send now."""
        return self._key

    def claim(self) -> bool:
        """Claim the new key with the current (old) one; True when it was swapped in.

        False when there is nothing to claim (no pending rotation, claimed already by another
        process, or the policy does not let the old key claim).
        """
        with self._lock:
            presented = self._key
            with httpx.Client(timeout=self._timeout, transport=self._transport) as client:
                response = client.post(self._base_url + CLAIM_PATH, headers=_bearer(presented))
            return self._swap(presented, response)

    async def aclaim(self) -> bool:
        """:meth:`claim`, for asyncio."""
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            presented = self._key
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._async_transport
            ) as client:
                response = await client.post(
                    self._base_url + CLAIM_PATH, headers=_bearer(presented)
                )
            return self._swap(presented, response)

    def _swap(self, presented: str, response: httpx.Response) -> bool:
        if response.status_code != 200:
            # Another holder of this RotatingKey swapped meanwhile, or nothing is held.
            return self._key != presented
        new_key = response.json().get("key")
        if not isinstance(new_key, str) or not new_key:
            return False
        self._key = new_key
        if self._on_rotated is not None:
            self._on_rotated(new_key)
        return True


class RotatingKeyAuth(httpx.Auth):
    """``Authorization: Bearer <current key>``, claiming the successor when a response says
    ``X-Keyplane-Rotation-Pending: true`` (the request itself already succeeded)."""

    def __init__(self, key: RotatingKey) -> None:
        self.key = key

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        sent = self.key.current
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if _pending(response) and self.key.current == sent:
            self.key.claim()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        sent = self.key.current
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if _pending(response) and self.key.current == sent:
            await self.key.aclaim()


def _pending(response: httpx.Response) -> bool:
    value: str = response.headers.get(PENDING_HEADER, "")
    return value.lower() == "true"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
