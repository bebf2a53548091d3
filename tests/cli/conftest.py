"""CLI tests run ``keyplane`` in-process (typer's CliRunner) against a real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from keyplane.cli.main import app
from tests.client.conftest import scripted  # noqa: F401 - a fixture, used here
from tests.conftest import ROOT_KEY
from tests.e2e.conftest import Server, live_server  # noqa: F401 - a fixture, used here


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Run = Callable[..., Result]


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    result = CliRunner().invoke(app, list(args), env=env, input=input, catch_exceptions=True)
    # A crash would surface as an exception other than the exit; never as a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception,
        result.output,
    )
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli(live_server: Server) -> Run:  # noqa: F811
    """``keyplane <args>`` against the module's server, configured through the environment."""

    def run(*args: str, key: str = ROOT_KEY, input: str | None = None) -> Result:
        env = {"KEYPLANE_URL": live_server.base_url, "KEYPLANE_MANAGEMENT_KEY": key}
        return invoke(*args, env=env, input=input)

    return run
