"""The gRPC server: ``grpc.aio`` on the app's own event loop, started and stopped with it.

Built from the runtime like the HTTP app (``api/app.py`` starts it in its lifespan when
``KEYPLANE_GRPC_PORT`` is set). Inputs are bounded before they are parsed: a message over
``KEYPLANE_MAX_BODY_BYTES`` is refused by grpc itself (RESOURCE_EXHAUSTED), and at most
``MAX_CONCURRENT_RPCS`` calls run at once.
"""

from __future__ import annotations

from typing import Any

import grpc

from keyplane.errors import ConfigurationError
from keyplane.grpc.ext_authz import CHECK, ExtAuthz
from keyplane.grpc.keys import KeysApi
from keyplane.services.runtime import Runtime

#: Calls served at once; more are refused RESOURCE_EXHAUSTED by grpc.
MAX_CONCURRENT_RPCS = 1000
#: Responses are ours and small (a page of keys at most); bounded all the same.
MAX_SEND_BYTES = 16 * 1024 * 1024
#: Seconds in-flight calls get to finish when the server stops.
STOP_GRACE_SECONDS = 5.0


class _Router(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Method path -> handler; an unknown method is grpc's UNIMPLEMENTED."""

    def __init__(self, handlers: dict[str, Any]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: Any) -> Any:
        return self._handlers.get(handler_call_details.method)


class GrpcServer:
    """Keyplane's gRPC API (``keyplane.v1``) and Envoy ext_authz on one port."""

    def __init__(self, server: Any, port: int) -> None:
        self._server = server
        self.port = port

    @classmethod
    async def start(cls, runtime: Runtime, host: str, port: int) -> GrpcServer:
        """Listen on ``host:port`` (0: any free port, see ``.port``) and serve.

        Raises:
            ConfigurationError: the address cannot be bound.
        """
        limit = runtime.settings.max_body_bytes
        server = grpc.aio.server(
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                # One process owns the port: a second one must fail, not share it silently.
                ("grpc.so_reuseport", 0),
            ],
        )
        keys = KeysApi(runtime)
        handlers = {
            path: keys.handler(path, request_type, handle)
            for path, (request_type, handle) in keys.methods().items()
        }
        handlers[CHECK] = ExtAuthz(runtime).handler()
        server.add_generic_rpc_handlers((_Router(handlers),))
        try:
            bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot listen for gRPC on {host}:{port}") from exc
        if bound == 0:
            raise ConfigurationError(f"cannot listen for gRPC on {host}:{port}")
        await server.start()
        return cls(server, bound)

    async def stop(self) -> None:
        """Stop accepting calls and let the running ones finish (a few seconds at most)."""
        await self._server.stop(STOP_GRACE_SECONDS)
