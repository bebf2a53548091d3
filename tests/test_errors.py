"""The error tree: one home (``keyplane.errors``), one drawing, one status table.

Driver exceptions do not travel past the adapter that met them: the Redis registry and the
invalidation channel raise or log Keyplane errors.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import keyplane
from keyplane import errors
from keyplane.api.compat.errors import failure_of
from keyplane.api.problems import COMPAT_STATUS_BY_ERROR, STATUS_BY_ERROR, status_for
from keyplane.domain.vault import Refusal
from keyplane.services.instances import RedisInstanceRegistry, await_confirmations
from keyplane.services.invalidation import RedisInvalidation
from tests.conftest import free_port

#: Error classes allowed to live outside ``keyplane.errors``: none.
PENDING_MOVE: set[str] = set()


def _all_modules() -> list[str]:
    names = []
    for module in pkgutil.walk_packages(keyplane.__path__, "keyplane."):
        if ".migrations" in module.name or module.name.endswith("__main__"):
            continue  # scripts, run not imported
        if module.name.startswith("keyplane.client"):
            continue  # the SDK has its own tree (client/errors.py)
        names.append(module.name)
    return names


def _subclasses(root: type[errors.KeyplaneError]) -> set[type[errors.KeyplaneError]]:
    found: set[type[errors.KeyplaneError]] = set()
    todo = [root]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def _tree_classes() -> list[str]:
    return [
        getattr(errors, name).__name__
        for name in dir(errors)
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), errors.KeyplaneError)
    ]


def test_every_keyplane_error_lives_in_the_errors_module() -> None:
    for name in _all_modules():
        importlib.import_module(name)
    elsewhere = {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _subclasses(errors.KeyplaneError)
        if cls.__module__ != "keyplane.errors" and cls.__module__.startswith("keyplane.")
    }
    assert elsewhere <= PENDING_MOVE


_DRAWN = re.compile(r"^    (?P<prefix>(?:│   |    )*)(?:[├└]── )?(?P<name>[A-Za-z]+Error)\b")


def test_the_docstring_draws_every_class_with_its_parent() -> None:
    drawing = errors.__doc__ or ""
    # "├── Name" / "└── Name", indented four columns a level under the root at column 4.
    depth_of: dict[str, int] = {}
    parents: list[str] = []
    for line in drawing.splitlines():
        match = re.match(
            r"^    (?P<prefix>(?:│   |    )*)(?:[├└]── )?(?P<name>[A-Za-z]+Error)\b", line
        )
        if match is None:
            continue
        depth = len(match["prefix"]) // 4 + (0 if match["name"] == "KeyplaneError" else 1)
        del parents[depth:]
        cls = getattr(errors, match["name"])
        if parents:
            assert cls.__bases__ == (getattr(errors, parents[-1]),), match["name"]
        parents.append(match["name"])
        depth_of[match["name"]] = depth
    assert sorted(depth_of) == sorted(_tree_classes())


def test_every_error_class_has_a_status_and_a_stable_code_of_its_own() -> None:
    classes = [getattr(errors, name) for name in _tree_classes()]
    assert set(STATUS_BY_ERROR) == set(classes)
    # A code of its own, or its parent's (kept where a class was split out of it later).
    own = [cls.code for cls in classes if "code" in vars(cls)]
    assert len(set(own)) == len(own)
    for cls in classes:
        assert re.fullmatch(r"[A-Z][A-Z_]+", cls.code), cls
        assert 400 <= STATUS_BY_ERROR[cls] <= 599
        assert status_for(cls("x")) == STATUS_BY_ERROR[cls]
    assert set(COMPAT_STATUS_BY_ERROR) <= set(classes)


def test_statuses_follow_the_nearest_named_class() -> None:
    assert status_for(errors.NoCredentialError("none")) == 404
    assert status_for(errors.AllRateLimitedError("cool", retry_after=3)) == 429
    assert status_for(errors.VaultNotConfiguredError("no key")) == 503
    assert status_for(errors.LimiterUnavailableError("down")) == 503

    class Unnamed(errors.NotFoundError):
        pass

    assert status_for(Unnamed("gone")) == 404
    assert status_for(errors.KeyplaneError("?")) == 500


def test_the_compat_surfaces_take_their_statuses_from_the_same_table() -> None:
    assert failure_of(errors.ValidationError("bad")).status == 400
    for cls in (errors.NotFoundError, errors.StorageError, errors.NoCredentialError):
        assert failure_of(cls("x")).status == STATUS_BY_ERROR[cls]


def test_vault_refusal_codes_are_the_domain_refusals() -> None:
    assert errors.NoCredentialError.code == Refusal.NO_CREDENTIAL
    assert errors.AllRateLimitedError.code == Refusal.ALL_RATE_LIMITED
    assert errors.AllAtMaxConcurrencyError.code == Refusal.ALL_AT_MAX_CONCURRENCY


async def _unreachable_redis() -> Redis:
    # A real client on a port nothing listens on: the driver's own connection error.
    # No retries: redis-py's default backoff would spend seconds on each call.
    return Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))


@pytest.mark.parametrize("call", ["beat", "leave", "live", "acknowledge", "acknowledged"])
async def test_the_redis_registry_raises_keyplane_errors_not_redis_ones(call: str) -> None:
    redis = await _unreachable_redis()
    registry = RedisInstanceRegistry(redis, "org_x", liveness_seconds=5)
    args = {"beat": ["i1"], "leave": ["i1"], "live": [], "acknowledge": ["ev", "i1"]}
    try:
        with pytest.raises(errors.RegistryUnavailableError) as raised:
            await getattr(registry, call)(*args.get(call, ["ev"]))
    finally:
        await redis.aclose()
    assert isinstance(raised.value, errors.StorageError)
    assert raised.value.message == "instance registry unavailable (ConnectionError)"
    assert type(raised.value.__cause__).__module__.startswith("redis.")


async def test_confirmations_still_degrade_and_log_the_driver_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = await _unreachable_redis()
    registry = RedisInstanceRegistry(redis, "org_x", liveness_seconds=5)

    async def publish(_eviction_id: str) -> None:
        raise AssertionError("nothing is published when the registry is down")

    try:
        with caplog.at_level(logging.WARNING, "keyplane.services.instances"):
            confirmation = await await_confirmations(registry, "me", publish, timeout=5)
    finally:
        await redis.aclose()
    assert confirmation.error == "the instance registry is unreachable"
    assert not confirmation.complete
    assert "revocation confirmations unavailable: ConnectionError" in caplog.text


async def test_an_unpublished_eviction_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = await _unreachable_redis()
    channel = RedisInvalidation(redis, lambda _eviction: None)
    try:
        with caplog.at_level(logging.WARNING, "keyplane.services.invalidation"):
            await channel.publish(("keys", "k1", ("h",)))
            await channel.flush()
    finally:
        await redis.aclose()
    assert "cache invalidation not published: ConnectionError" in caplog.text


def test_the_library_s_refusals_take_the_api_s_status_and_the_sdk_s_class() -> None:
    from keyplane import client as sdk
    from keyplane.vault import _refusal

    expected = {
        errors.NoCredentialError: sdk.NoCredentialError,
        errors.AllRateLimitedError: sdk.AllRateLimitedError,
        errors.AllAtMaxConcurrencyError: sdk.AllAtMaxConcurrencyError,
        errors.LeaseRefusedError: sdk.LeaseRefusedError,
    }
    for served, raised in expected.items():
        refusal = served("none", retry_after=7)
        error = _refusal(refusal)
        assert type(error) is raised
        assert (error.status, error.code, error.retry_after) == (
            status_for(refusal),
            served.code,
            7,
        )
