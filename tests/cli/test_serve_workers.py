"""``keyplane serve --workers N`` hands uvicorn's supervisor a patient worker health check."""

from __future__ import annotations

from typing import Any

import pytest

from keyplane.cli import main as cli_main
from tests.cli.conftest import invoke
from tests.conftest import PG_URL, REDIS_URL, ROOT_KEY, SERVER_SECRET, Database, require_redis

pytestmark = pytest.mark.postgres


def test_workers_get_a_health_check_longer_than_a_loaded_start(
    postgres_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's default (5 s) kills workers that start slowly on a busy host, forever."""
    require_redis()
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: runs.append(options))
    monkeypatch.setattr(cli_main, "_first_start", lambda settings: None)
    env = {
        "KEYPLANE_DATABASE_URL": PG_URL,
        "KEYPLANE_DATABASE_SCHEMA": str(postgres_database.schema),
        "KEYPLANE_REDIS_URL": REDIS_URL,
        "KEYPLANE_SECRET": SERVER_SECRET,
        "KEYPLANE_ROOT_KEY": ROOT_KEY,
    }
    result = invoke("serve", "--workers", "2", "--port", "8080", env=env)
    assert result.code == 0, result
    [options] = runs
    assert options["workers"] == 2
    assert options["timeout_worker_healthcheck"] == cli_main.WORKER_HEALTHCHECK_SECONDS >= 30
