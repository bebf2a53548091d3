"""The Grafana dashboard in docs/ only reads series /metrics really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from keyplane import metrics
from tests import scrape

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"


def test_every_series_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    wanted = {name for expr in exprs for name in re.findall(r"\b((?:keyplane|process)_\w+)", expr)}
    body, _content_type = metrics.render()
    families = scrape.types(body.decode())
    suffixes = ("_total", "_bucket", "_sum", "_count")
    exported = set(families) | {f + s for f in families for s in suffixes}
    assert wanted <= exported, sorted(wanted - exported)
