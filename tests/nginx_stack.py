"""The production topology under test: Debian's nginx, configured with deploy/nginx/comms.conf,
in front of two uvicorn processes, serving `collectstatic` output and protected media.

Everything nginx writes (pid, logs, temp files) lives in the test's temporary folder; it
listens on a free loopback port and is stopped after the test. The system's nginx service is
never touched.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from tests.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TEMPLATE = ROOT / "deploy" / "nginx" / "comms.conf"
# Loopback cannot vary a client's address, so in tests a header plays the part of the
# network: nginx's realip module takes the client address from it, exactly as it would from
# a load balancer in front (the REAL_IP slot of the production file).
CLIENT_IP_HEADER = "X-Test-Client-IP"

MAIN_CONF = """\
worker_processes 1;
daemon off;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/comms.conf;
}}
"""

_collected: Path | None = None


def collected_static() -> Path:
    """`manage.py collectstatic` once per test run (symlinks: the same files, quicker)."""
    global _collected
    if _collected is None:
        target = ROOT / "var" / f"test-static-{os.environ.get('TEST_RUN_ID', 'x')}"
        env = {**os.environ, "DJANGO_STATIC_ROOT": str(target)}
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "--link", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=300,
        )
        _collected = target
    return _collected


@dataclass
class ProxiedServer:
    """Quacks like tests.conftest.LiveServer (url, ws_url, port) for the browser tests."""

    port: int
    backends: list  # type: ignore[type-arg]
    process: subprocess.Popen[bytes]
    workdir: Path
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)


def scrape(stack: ProxiedServer, process: int = 0) -> dict[str, float]:
    """One process's /metrics (loopback is allowed), as {sample name{labels}: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"{stack.backends[process].url}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def render_site(*, port: int, backends: list[int], static_root: Path, media_root: Path) -> str:
    values = {
        "ASGI_SERVERS": " ".join(f"server 127.0.0.1:{p};" for p in backends),
        "LISTEN": f"listen 127.0.0.1:{port};",
        "SERVER_NAME": "127.0.0.1 localhost",
        "STATIC_ROOT": str(static_root),
        "MEDIA_ROOT": str(media_root),
        "REAL_IP": f"set_real_ip_from 127.0.0.1; real_ip_header {CLIENT_IP_HEADER};",
    }
    # safe_substitute: nginx's own $variables stay as they are.
    return string.Template(TEMPLATE.read_text()).safe_substitute(values)


def start_nginx_stack(
    start_backend: Callable[..., object],
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    processes: int = 2,
) -> ProxiedServer:
    from tests.conftest import free_port

    static_root = collected_static()
    media_root = Path(settings.MEDIA_ROOT)
    media_root.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus").mkdir(exist_ok=True)
    env = {
        **(extra_env or {}),
        # Static files come from nginx only; uploads go out through X-Accel-Redirect.
        "DJANGO_SERVE_STATIC": "0",
        "MEDIA_X_ACCEL_REDIRECT": "/protected-media/",
        # Both processes write their figures here; either one's /metrics reports the sum.
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
    }
    # Started side by side: each start is mostly waiting on the other's imports.
    with concurrent.futures.ThreadPoolExecutor(processes) as pool:
        backends = list(pool.map(lambda _: start_backend(env, server="uvicorn"), range(processes)))
    port = free_port()
    (workdir / "comms.conf").write_text(
        render_site(
            port=port,
            backends=[b.port for b in backends],  # type: ignore[attr-defined]
            static_root=static_root,
            media_root=media_root,
        )
    )
    (workdir / "nginx.conf").write_text(MAIN_CONF.format(dir=workdir))
    test = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    if test.returncode != 0:
        raise RuntimeError(f"nginx refused the configuration:\n{test.stderr}")
    proc = subprocess.Popen(
        [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "stderr.log", "wb"),  # noqa: SIM115
    )
    server = ProxiedServer(
        port=port,
        backends=backends,
        process=proc,
        workdir=workdir,
        logs=[ROOT / "var" / f"server-{b.port}.log" for b in backends],  # type: ignore[attr-defined]
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/health/live/", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"nginx did not start: {(workdir / 'error.log').read_text()}"
                ) from None
            time.sleep(0.1)  # startup poll: nothing to wait on but the port
