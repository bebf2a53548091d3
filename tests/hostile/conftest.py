"""One real ``keyplane serve`` (SQLite) per catalogue module, for the responsiveness checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Server, ServerFactory, make_backend


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("hostile")
    with make_backend("sqlite", workdir) as backend:
        factory = ServerFactory(workdir)
        try:
            yield factory(backend.env)
        finally:
            factory.stop_all()
