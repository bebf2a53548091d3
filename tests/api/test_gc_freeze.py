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
