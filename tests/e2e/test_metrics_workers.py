"""``keyplane serve --workers 2``: /metrics adds up every worker's counts, whichever answers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests import scrape
from tests.conftest import (
    PG_URL,
    REDIS_URL,
    ROOT_KEY,
    SERVER_SECRET,
    postgres_schema,
    require_redis,
)
from tests.e2e.conftest import ServerFactory


def test_metrics_of_two_workers_add_up(start_server: ServerFactory, tmp_path: Path) -> None:
    require_redis()
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"stale")  # a previous server's: removed at start
    with postgres_schema() as schema:
        server = start_server(
            {
                "KEYPLANE_DATABASE_URL": PG_URL,
                "KEYPLANE_DATABASE_SCHEMA": schema,
                "KEYPLANE_REDIS_URL": REDIS_URL,
                "KEYPLANE_SECRET": SERVER_SECRET,
                "KEYPLANE_ROOT_KEY": ROOT_KEY,
                "PROMETHEUS_MULTIPROC_DIR": str(shared),
            },
            args=("--workers", "2"),
        )
        requests = 40
        for _ in range(requests):
            # A connection each: the kernel hands connections to either worker.
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                assert http.get("/healthz").status_code == 200
        counts = []
        for _ in range(6):
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                samples = scrape.parse(http.get("/metrics").text)
            counts.append(
                scrape.value(
                    samples,
                    "keyplane_http_request_duration_seconds_count",
                    method="GET",
                    route="/healthz",
                    status="200",
                )
            )
        # Whichever worker answered, the same total: ours plus the fixture's start-up probes.
        assert len(set(counts)) == 1 and counts[0] >= requests, counts
        # Both workers write their values into the shared directory (one file each per type).
        pids = {
            match.group(1)
            for name in (p.name for p in shared.iterdir())
            if (match := re.fullmatch(r"\w+_(\d+)\.db", name))
        }
        assert len(pids) >= 2, sorted(p.name for p in shared.iterdir())
        assert not (shared / "counter_1.db").exists()
        server.stop_cleanly()
