"""``voxguard serve`` as a real process: problems found before the models load are one line and exit 2,
and a started server says where it serves (and warns when anyone on the network may use it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import ServerProcess, free_port
from voxguard.processes.server import exposure_warning, is_loopback, public_url
from voxguard.settings import Settings


def _serve(args: list[str], checkpoint_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir), **env}
    return subprocess.run(
        [sys.executable, "-m", "voxguard.cli", "serve", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def test_a_taken_port_is_reported_before_the_models_load(checkpoint_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        proc = _serve(["--port", str(port)], checkpoint_dir)  # logs at INFO
        elapsed = time.monotonic() - started
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        f"voxguard: port {port} on 127.0.0.1 is already in use (another voxguard, or another program). "
        "Hint: stop it, or choose another port with --port (VOXGUARD_PORT)"
    )
    for later in ("loaded aasist", "ready: models", "Traceback", "Application startup failed"):
        assert later not in proc.stderr, proc.stderr
    assert elapsed < 60


def test_missing_weights_stop_serve_in_one_line_before_torch_loads(tmp_path):
    """The check is on paths alone; importing the model stack first took seconds (10 on a cold machine)."""
    code = (
        "import sys\n"
        "from voxguard.cli import main\n"
        f"code = main(['serve', '--port', '{free_port()}', '--checkpoint-dir', {str(tmp_path)!r}])\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(
        f"voxguard: Checkpoint for 'aasist' not found: {tmp_path / 'AASIST.pth'} does not exist. Hint: "
    )
    assert proc.stdout.strip() == "no torch"


def test_cuda_asked_for_without_cuda_stops_serve_in_one_line(checkpoint_dir):
    proc = _serve(
        ["--port", str(free_port())], checkpoint_dir, VOXGUARD_DEVICE="cuda", CUDA_VISIBLE_DEVICES=""
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(
        "voxguard: device 'cuda' requested but CUDA is not available on this machine. Hint: use --device cpu"
    )
    assert "Traceback" not in proc.stderr and "Application startup failed" not in proc.stderr


def test_a_bad_variable_stops_serve_in_one_line(checkpoint_dir):
    proc = _serve(["--port", "0"], checkpoint_dir, VOXGUARD_ENGINE="turbo")
    assert proc.returncode == 2
    assert proc.stderr.startswith("voxguard: VOXGUARD_ENGINE='turbo' is not valid")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_serve_prints_its_url_and_warns_when_open_to_the_network(checkpoint_dir, tmp_path):
    server = ServerProcess(
        ["--host", "0.0.0.0"], {"VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir), "TMPDIR": str(tmp_path)}
    )
    try:
        server.wait_ready()
        log = server.output()
    finally:
        server.close()
    url = f"http://localhost:{server.port}"
    assert f"serving {url} (Swagger UI at {url}/docs, the web page at {url}/)" in log
    logged = "WARNING voxguard.processes.launch"
    warning = f"{logged}: listening on 0.0.0.0 without API keys: anyone who can reach port"
    assert f"{warning} {server.port}" in log
    assert log.index(logged) < log.index("loaded aasist")  # said before the slow part


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("voxguard.internal", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_the_network_warning_only_without_keys_beyond_loopback():
    assert exposure_warning(Settings(host="127.0.0.1").http, 8000) is None
    assert exposure_warning(Settings(host="0.0.0.0", api_keys=["k"]).http, 8000) is None
    warning = exposure_warning(Settings(host="0.0.0.0").http, 8000)
    assert warning is not None and "without API keys" in warning and "VOXGUARD_API_KEYS" in warning


def test_public_url():
    assert public_url(Settings(host="0.0.0.0").http, 8000) == "http://localhost:8000"
    assert public_url(Settings(host="127.0.0.1").http, 8001) == "http://127.0.0.1:8001"
    assert public_url(Settings(host="::1", certfile=Path("c.pem")).http, 8443) == "https://[::1]:8443"
