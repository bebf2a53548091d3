"""``KEYPLANE_GC_FREEZE``: the server freezes its startup heap; a test process does not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from keyplane.api.app import create_app
from keyplane.domain.clock import ManualClock
from tests.conftest import Database


@pytest.fixture
def frozen_heap_restored() -> Iterator[None]:
    """Put the process's frozen generation back as the test suite keeps it."""
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_startup_heap_is_frozen_only_when_asked(
    freeze: bool, sqlite_database: Database, clock: ManualClock, frozen_heap_restored: None
) -> None:
    app = create_app(sqlite_database.settings(gc_freeze=freeze), clock=clock)
    gc.unfreeze()
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
    assert (frozen > 0) is freeze


async def test_an_app_that_did_not_freeze_leaves_the_process_frozen_heap_alone(
    sqlite_database: Database, clock: ManualClock, frozen_heap_restored: None
) -> None:
    """The test suite freezes its imports once; each test app used to thaw them on stop, and
    every later full collection walked the whole heap again (0.12 s a test)."""
    gc.freeze()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    app = create_app(sqlite_database.settings(gc_freeze=False), clock=clock)
    async with app.router.lifespan_context(app):
        pass
    # Frozen objects can still be freed by reference counting: a few go, not the heap.
    assert gc.get_freeze_count() > frozen * 0.9
