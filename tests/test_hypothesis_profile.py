"""No property test may bring back hypothesis's timing checks.

The ``keyplane`` profile (tests/conftest.py) turns off the per-example deadline and the
too-slow health check: both are timing assertions under a second, which failed
``test_a_burst_at_one_instant_admits_exactly_the_burst`` on a loaded machine. A test's own
``@settings(...)`` inherits the profile, but could set a deadline again: this walks every test
module and checks the settings each property test really runs with.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from hypothesis import HealthCheck, settings

import tests


def _property_tests() -> list[tuple[str, settings]]:
    found = []
    for module_info in pkgutil.walk_packages(tests.__path__, "tests."):
        module = importlib.import_module(module_info.name)
        for name, member in inspect.getmembers(module, inspect.isfunction):
            chosen = getattr(member, "_hypothesis_internal_use_settings", None)
            if name.startswith("test") and isinstance(chosen, settings):
                found.append((f"{module_info.name}.{name}", chosen))
    return found


def test_the_profile_has_no_timing_checks() -> None:
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check


def test_no_property_test_sets_a_deadline() -> None:
    chosen = dict(_property_tests())
    assert "tests.domain.test_gcra.test_a_burst_at_one_instant_admits_exactly_the_burst" in chosen
    assert {name for name, used in chosen.items() if used.deadline is not None} == set()
    slow_checked = {
        name
        for name, used in chosen.items()
        if HealthCheck.too_slow not in used.suppress_health_check
    }
    assert slow_checked == set()
