"""A native HTTP load generator for ``voxguard bench serve``: wrk, driven with a small Lua script.

A Python client process saturates long before a fast server does, and then measures itself. wrk (C,
event-driven) does not: ``bench serve`` also times it against a trivial endpoint (nginx answering
``200 {}``), so every report shows how much faster the load generator is than the server it measured.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..setup_errors import SetupError

# The done() hook prints one line the parser below reads: requests, microseconds, non-2xx/3xx answers,
# socket errors (connect, read, write, timeout), then latency percentiles in microseconds.
_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("VOXGUARD-WRK %d %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadRun:
    """What one wrk run measured against one URL."""

    requests: int
    seconds: float
    throughput_rps: float
    non_2xx: int  # answers that were not 2xx or 3xx
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SetupError(
            "bench serve needs wrk, a native HTTP load generator, and it is not installed.",
            "apt-get install wrk (CI installs it in .ci/run)",
        )
    return path


def run_wrk(
    url: str,
    body: bytes,
    content_type: str,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
) -> LoadRun:
    """POST ``body`` to ``url`` over ``connections`` keep-alive connections for ``duration_s`` seconds."""
    if connections < threads or threads < 1 or duration_s < 1:
        raise ValueError(
            f"need 1 <= threads <= connections and >= 1 s, got {threads}, {connections}, {duration_s}"
        )
    with tempfile.TemporaryDirectory(prefix="voxguard-wrk-") as folder:
        body_path = Path(folder) / "body"
        body_path.write_bytes(body)
        script = Path(folder) / "post.lua"
        script.write_text(_SCRIPT.format(content_type=content_type, body=body_path))
        command = [
            wrk_binary(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration_s:g}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("VOXGUARD-WRK ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}"[:2000])
    n, micros, status, connect, read, write, timeout, p50, p90, p99 = map(int, line.split()[1:])
    seconds = micros / 1e6
    return LoadRun(
        requests=n,
        seconds=round(seconds, 3),
        throughput_rps=round(n / seconds, 1),
        non_2xx=status,
        socket_errors=connect + read + write + timeout,
        p50_ms=round(p50 / 1000, 2),
        p90_ms=round(p90 / 1000, 2),
        p99_ms=round(p99 / 1000, 2),
    )


_NGINX_CONF = """
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  client_max_body_size 0;
  client_body_buffer_size 1m;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{{}}'; }}
  }}
}}
"""


@contextlib.contextmanager
def trivial_endpoint(port: int) -> Iterator[str]:
    """nginx answering every request with ``200 {}``: the fastest server there is to load, so wrk's rate
    against it is the load generator's own ceiling."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        raise SetupError(
            "bench serve measures its load generator against nginx, which is not installed.",
            "apt-get install nginx (CI installs it in .ci/run)",
        )
    with tempfile.TemporaryDirectory(prefix="voxguard-nginx-") as folder:
        conf = Path(folder) / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(folder=folder, port=port))
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", folder], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_for_port(port, proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"nginx exited: {proc.stderr.read().decode(errors='replace') if proc.stderr else ''}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on port {port} within {timeout_s:g} s")
