"""``python -m build`` makes a wheel that installs into a fresh virtualenv and serves.

The wheel is built from a copy of the sources (the build writes ``build/`` and ``*.egg-info``
beside them) without build isolation, and installed with ``--no-deps`` into a new venv. The
dependencies come from this test run's own environment through a ``.pth`` line: resolving
them from an index would take minutes, and what can break in packaging is the wheel's own
content (modules, migrations, Lua scripts, the console script), which is all the fresh venv's.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import httpx
import pytest

import keyplane
from tests.e2e.conftest import free_port, process_env

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, source)
    (wheel,) = dist.glob("keyplane-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    home = tmp_path / "venv"
    venv.create(home, with_pip=False, symlinks=True)
    python = home / "bin" / "python"
    purelib = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    # This run's packages, after the venv's own: the wheel's keyplane comes first. A path
    # line's own .pth files are not read, so this environment's editable keyplane stays out.
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)
    return home


@pytest.mark.e2e
def test_the_built_wheel_installs_and_serves_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    assert wheel.name == f"keyplane-{keyplane.__version__}-py3-none-any.whl"
    home = _fresh_venv(tmp_path, wheel)
    script = home / "bin" / "keyplane"
    assert _run(script, "--version").strip() == keyplane.__version__
    where = _run(home / "bin" / "python", "-c", "import keyplane; print(keyplane.__file__)")
    assert where.startswith(str(home)), where  # the wheel's, not this checkout's

    port = free_port()
    env = process_env(
        {
            "KEYPLANE_DATABASE_URL": f"sqlite:///{tmp_path / 'keyplane.db'}",
            "KEYPLANE_PORT": str(port),
            "KEYPLANE_ROOT_KEY": "root-key-for-the-wheel-test-" + "x" * 24,
        }
    )
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(script), "serve"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        health = _wait_for_health(f"http://127.0.0.1:{port}", server)
        assert health.json() == {"status": "ok", "version": keyplane.__version__}
        assert health.headers["keyplane-version"] == keyplane.__version__
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            # Migrations ran from the wheel (the root key works), and the docs' assets are there.
            headers = {"Authorization": "Bearer root-key-for-the-wheel-test-" + "x" * 24}
            assert client.get("/v1/keys", headers=headers).status_code == 200
            assert client.get("/redoc/assets/redoc.standalone.js").status_code == 200
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(20)
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


def _wait_for_health(base_url: str, server: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + DEADLINE
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            assert server.poll() is None, "keyplane serve exited"
            with contextlib.suppress(httpx.TransportError):
                response = client.get("/healthz")
                if response.status_code == 200:
                    return response
            time.sleep(0.2)
    pytest.fail(f"keyplane serve from the wheel did not answer within {DEADLINE} s")
