"""``bench/observe.py`` still runs against the code it measures (it once stopped, silently,
when ``RequestObserver`` changed its arguments), and measures the access log it claims to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "observe.py"


def test_the_observe_bench_runs_and_prints_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "500"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for figure in ("empty call (floor)", "access log off", "access log on"):
        assert figure in done.stdout
