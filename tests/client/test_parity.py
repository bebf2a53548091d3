"""The sync and async clients offer the same operations with the same parameters."""

from __future__ import annotations

import asyncio
import inspect

from keyplane.client import AsyncClient, Client


def _public(obj: object) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(getattr(obj, name))
        for name in dir(obj)
        if not name.startswith("_") and callable(getattr(obj, name))
    }


def _parameters(signature: inspect.Signature) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_every_method_exists_on_both_clients_with_the_same_parameters() -> None:
    sync, aio = Client("http://127.0.0.1:1"), AsyncClient("http://127.0.0.1:1")
    try:
        pairs = [(sync, aio)] + [
            (getattr(sync, name), getattr(aio, name))
            for name in (
                "keys",
                "plans",
                "management_keys",
                "projects",
                "usage",
                "vault",
                "signing_secrets",
                "audit",
                "webhooks",
                "reports",
            )
        ]
        for one, other in pairs:
            left, right = _public(one), _public(other)
            # close / aclose is the only naming difference, as in httpx.
            left.pop("close", None), right.pop("aclose", None)
            assert left.keys() == right.keys(), type(one)
            for name, signature in left.items():
                assert _parameters(signature) == _parameters(right[name]), name
                # iterate* and stream are (async) generators, use_key a (async) context
                # manager.
                if not name.startswith(("iterate", "use_key", "stream")):
                    assert inspect.iscoroutinefunction(getattr(other, name)), name
    finally:
        sync.close()
        asyncio.run(aio.aclose())


def test_verify_keeps_the_signature_gateways_build_on() -> None:
    names = list(inspect.signature(AsyncClient.verify).parameters)
    assert names == [
        "self",
        "key",
        "model",
        "scopes",
        "ip",
        "origin",
        "referrer",
        "user_agent",
        "cost",
        "tokens",
        "acquire_concurrency",
        "request_id",
        # Added at the end, keyword-only (transport rules and signed requests).
        "scheme",
        "country",
        "signature",
        # Added later, keyword-only, at the end: callers of the names above are unaffected.
        "features",
        "operation",
        "provider",
        "wait_ms",
    ]
