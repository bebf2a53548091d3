"""Start a throwaway ``keyplane serve`` for the benchmarks that measure a client against it."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    workdir: Path, root_key: str, **extra_env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """``keyplane serve`` on a fresh SQLite file in ``workdir``; returns it and its base URL.

    The caller's ``KEYPLANE_*`` variables are ignored; ``extra_env`` adds settings of its own.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env.update(
        KEYPLANE_PORT=str(port),
        KEYPLANE_DATABASE_URL=f"sqlite:///{workdir / 'keyplane.db'}",
        KEYPLANE_SECRET=secrets.token_urlsafe(32),
        KEYPLANE_ROOT_KEY=root_key,
        KEYPLANE_LOG_LEVEL="warning",
        **extra_env,
    )
    script = Path(sys.executable).with_name("keyplane")
    process = subprocess.Popen(
        [str(script), "serve"], env=env, cwd=workdir, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("keyplane serve did not start")
