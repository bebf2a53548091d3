"""A real nginx in front of a tiny upstream, asking a real Keyplane through ``auth_request``.

nginx loads docs/examples/nginx.conf itself (addresses, port and gateway key substituted), so
the documented example cannot rot. With ``CI=true`` a missing nginx fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, free_port
from tests.e2e.conftest import Server, ServerFactory, make_backend

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "nginx.conf"
STARTUP_TIMEOUT = 20.0


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        message = "nginx is not installed (apt-get install nginx-light)"
        if IN_CI:
            pytest.fail(message + " (CI=true: failing instead of skipping)")
        pytest.skip(message)
    return found


class _EchoHandler(BaseHTTPRequestHandler):
    """The upstream API: answers 200 with the headers it received, as JSON."""

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def render_example(keyplane_port: int, upstream_port: int, port: int, gateway_key: str) -> str:
    """docs/examples/nginx.conf with this test's addresses and key in place of the examples."""
    text = EXAMPLE.read_text(encoding="utf-8")
    replacements = {
        "server 127.0.0.1:8400;": f"server 127.0.0.1:{keyplane_port};",
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream_port};",
        "listen 8000;": f"listen 127.0.0.1:{port};",
        '"kp_mgmt_CHANGE_ME"': f'"{gateway_key}"',
    }
    for example, actual in replacements.items():
        assert text.count(example) == 1, f"the example no longer contains {example!r}"
        text = text.replace(example, actual)
    return text


def main_config(workdir: Path, include: Path) -> str:
    """An nginx.conf of the test's own: everything under workdir, no root, no daemon."""
    temp = {name: workdir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    return f"""
daemon off;
master_process off;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} info;
events {{ worker_connections 128; }}
http {{
    access_log {workdir / "access.log"};
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {include};
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def run_nginx(
    workdir: Path, keyplane: Server, upstream_port: int, gateway_key: str
) -> Iterator[Nginx]:
    binary = nginx_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        port = free_port()
        site = workdir / "keyplane.conf"
        site.write_text(render_example(keyplane.port, upstream_port, port, gateway_key))
        config = workdir / "nginx.conf"
        config.write_text(main_config(workdir, site))
        test = subprocess.run(
            [binary, "-t", "-p", str(workdir), "-c", str(config), "-e", str(workdir / "t.log")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert test.returncode == 0, test.stderr
        process = subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(config), "-e", str(workdir / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nginx = Nginx(process, port, workdir)
        try:
            if _wait_for_port(process, port):
                yield nginx
                return
            if "Address already in use" not in nginx.error_log:
                pytest.fail(f"nginx did not start\n{nginx.error_log}")
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
    pytest.fail("nginx found no free port in 3 attempts")


def _wait_for_port(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def test_nginx_asks_keyplane_before_every_request(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    nginx_binary()  # skip (or, in CI, fail) before starting anything
    with make_backend("sqlite", tmp_path) as backend:
        keyplane = start_server({**backend.env, "KEYPLANE_TRUSTED_PROXIES": "127.0.0.1"})
        with keyplane.client() as admin:
            created = admin.post(
                "/v1/management-keys", json={"name": "nginx", "scopes": ["verify"]}
            )
            assert created.status_code == 201, created.text
            gateway_key = created.json()["key"]

            def new_key(**fields: object) -> tuple[str, str]:
                response = admin.post("/v1/keys", json={"name": "k", **fields})
                assert response.status_code == 201, response.text
                return response.json()["key"], response.json()["data"]["id"]

            good, good_id = new_key(owner="cust_42")
            limited, _ = new_key(
                policy={"rate_limits": [{"name": "per_minute", "limit": 2, "period": 60}]}
            )
            broke, broke_id = new_key(policy={"budget": {"credit_limit": 0.5}})
            spent = admin.post(
                "/v1/usage", json={"key_id": broke_id, "request_id": "spent", "cost": 0.5}
            )
            assert spent.status_code == 201, spent.text
            walled, _ = new_key(policy={"network": {"ip_allow": ["203.0.113.0/24"]}})

            with (
                upstream() as upstream_port,
                run_nginx(tmp_path / "nginx", keyplane, upstream_port, gateway_key) as nginx,
                httpx.Client(base_url=nginx.base_url, timeout=10) as client,
            ):

                def get(key: str | None, **headers: str) -> httpx.Response:
                    if key is not None:
                        headers["Authorization"] = f"Bearer {key}"
                    return client.get("/v1/chat?x=1", headers=headers)

                # Allowed: reaches the upstream, with who the key is; never a forged identity.
                allowed = get(good, **{"X-Keyplane-Key-Id": "forged", "X-Keyplane-Scopes": ""})
                assert allowed.status_code == 200, f"{allowed.text}\n{nginx.error_log}"
                seen = allowed.json()["headers"]
                assert allowed.json()["path"] == "/v1/chat?x=1"
                assert seen["X-Keyplane-Key-Id"] == good_id
                assert seen["X-Keyplane-Owner"] == "cust_42"
                # nginx's own $request_id, passed to Keyplane and on to the upstream.
                assert re.fullmatch(r"[0-9a-f]{32}", seen["X-Keyplane-Request-Id"])
                assert "X-Keyplane-Plan" not in seen  # no plan: no header

                # A bad key and no key: 401 problem+json with a challenge.
                for key in ("kp_live_nonsense", None):
                    refused = get(key)
                    assert refused.status_code == 401, refused.text
                    assert refused.headers["content-type"] == "application/problem+json"
                    assert refused.json()["code"] in ("MALFORMED", "MISSING_KEY")
                    challenges = refused.headers.get_list("WWW-Authenticate")
                    assert len(challenges) == 1 and challenges[0].startswith("Bearer")

                # A client's own X-Forwarded-For cannot pass an IP rule: nginx overwrites it.
                spoofed = get(walled, **{"X-Forwarded-For": "203.0.113.5"})
                assert spoofed.status_code == 403, spoofed.text
                assert spoofed.json()["code"] == "IP_NOT_ALLOWED"

                # Rate limited: 429 with Retry-After and RateLimit-*.
                assert get(limited).status_code == 200
                second = get(limited)
                assert second.status_code == 200
                assert second.headers["RateLimit-Remaining"] == "0"
                throttled = get(limited)
                assert throttled.status_code == 429, f"{throttled.text}\n{nginx.error_log}"
                assert throttled.json()["code"] == "RATE_LIMITED"
                assert int(throttled.headers["Retry-After"]) >= 1
                assert throttled.headers["RateLimit-Limit"] == "2"

                # Budget exhausted: 402.
                broke_answer = get(broke)
                assert broke_answer.status_code == 402, broke_answer.text
                assert broke_answer.json()["code"] == "BUDGET_EXCEEDED"

                # Revoked mid-test: refused on the very next request.
                assert get(good).status_code == 200
                revoked = admin.request("DELETE", f"/v1/keys/{good_id}", json={})
                assert revoked.status_code == 200, revoked.text
                after = get(good)
                assert after.status_code == 401, after.text
                assert after.json()["code"] == "REVOKED"

            # Keyplane down: nginx fails closed.
            keyplane.stop()
            with (
                upstream() as upstream_port,
                run_nginx(tmp_path / "nginx2", keyplane, upstream_port, gateway_key) as nginx,
                httpx.Client(base_url=nginx.base_url, timeout=10) as client,
            ):
                down = client.get("/", headers={"Authorization": f"Bearer {limited}"})
                assert down.status_code == 503, down.text
                assert down.json()["code"] == "AUTH_UNAVAILABLE"
