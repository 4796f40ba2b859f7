"""``VOXGUARD_FRONTENDS=N`` as real processes: a supervisor, one engine process, N uvicorn front-ends.

The reliability suite and the service tests run against the same wiring in one process too
(``servers.SplitServer``); here are what only real processes show: identical answers to the single
process, metrics summed over processes, and crashed processes that come back with ``/ready`` saying so.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from servers import ServerProcess, live_server

SAMPLES = ["p225_001_mic1.flac", "p225_002_mic2.flac", "voicememo.mp3"]
VOLATILE = {"timing", "batch_sizes", "request_id"}


def stable(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in VOLATILE}


def pids(server: ServerProcess, pattern: str) -> list[int]:
    return [int(p) for p in re.findall(pattern, server.output())]


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def ready(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.url}/ready", timeout=10)


def ready_text(server: ServerProcess) -> str:
    """``/ready``'s answer; empty for a connection the kernel had queued on a front-end as it was
    killed (each front-end has its own listening socket, and a dead one resets what it held)."""
    try:
        return ready(server).text
    except httpx.TransportError:
        return ""


def predict(url: str, path: Path) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"file": (path.name, path.read_bytes())}, timeout=120)


@pytest.mark.slow
def test_two_frontends_answer_exactly_as_one_process(checkpoint_dir, samples_dir, detector_factory, tmp_path):
    split = ServerProcess(
        ["--frontends", "2", "--checkpoint-dir", str(checkpoint_dir)], {"TMPDIR": str(tmp_path)}
    )
    try:
        split.wait_ready()
        with live_server({"aasist": detector_factory("aasist", "fast")}) as single:
            for name in SAMPLES:
                path = samples_dir / name
                for _ in range(2):  # both front-ends, most likely
                    one, many = predict(single.url, path), predict(split.url, path)
                    assert one.status_code == many.status_code == 200, (name, many.text)
                    a, b = stable(one.json()), stable(many.json())
                    for window_a, window_b in zip(a.pop("windows"), b.pop("windows"), strict=True):
                        assert window_a.pop("score") == pytest.approx(window_b.pop("score"), abs=1e-4)
                        window_a.pop("fake_probability"), window_b.pop("fake_probability")
                        assert window_a == window_b
                    assert a.pop("score") == pytest.approx(b.pop("score"), abs=1e-4)
                    assert a.keys() == b.keys() and a["prediction"] == b["prediction"], name
        split.terminate()
        assert split.proc.wait(timeout=60) == 0
    finally:
        split.close()


def test_crashed_processes_come_back_and_ready_says_so_meanwhile(samples_dir, tmp_path):
    server = ServerProcess(["--frontends", "2", "--engine", "simulated"], {"TMPDIR": str(tmp_path)})
    clip = samples_dir / "p225_001_mic1.flac"
    try:
        server.wait_ready()
        for _ in range(6):
            assert predict(server.url, clip).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        # Summed over both front-ends and the engine, whichever front-end answers /metrics.
        assert 'voxguard_requests_total{route="/v1/predict",status="200"} 6.0' in metrics
        assert 'voxguard_batch_size_count{model="aasist"} 6.0' in metrics

        frontend = pids(server, r"front-end 1: process (\d+) started")[-1]
        os.kill(frontend, signal.SIGKILL)
        wait_for(lambda: "front-end 1 of 2 is down or starting" in ready_text(server))
        wait_for(lambda: ready(server).status_code == 200)
        assert len(pids(server, r"front-end 1: process (\d+) started")) == 2
        assert predict(server.url, clip).status_code == 200

        engine = pids(server, r"engine process (\d+) started")[-1]
        os.kill(engine, signal.SIGKILL)
        wait_for(lambda: "engine process" in ready(server).text)
        wait_for(lambda: ready(server).status_code == 200)
        for _ in range(4):
            assert predict(server.url, clip).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'voxguard_requests_total{route="/v1/predict",status="200"} 11.0' in metrics

        server.terminate()
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.close()


def connections_of(pid: int, port: int) -> int:
    """Established TCP connections process ``pid`` holds on local ``port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            count += local_port == port and state == "01" and inode in inodes
    return count


def test_a_burst_of_connections_is_spread_over_the_front_ends(tmp_path):
    """Each front-end listens with its own socket: a shared one let the first to wake accept a whole
    burst (asyncio accepts up to its backlog at once), one front-end busy and the other idle."""
    server = ServerProcess(["--frontends", "2", "--engine", "simulated"], {"TMPDIR": str(tmp_path)})
    try:
        server.wait_ready()
        port = int(server.url.rsplit(":", 1)[1])
        frontends = [pids(server, rf"front-end {i}: process (\d+) started")[-1] for i in range(2)]
        burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        try:
            wait_for(lambda: sum(connections_of(pid, port) for pid in frontends) == 40)
            counts = [connections_of(pid, port) for pid in frontends]
            assert min(counts) >= 8, counts  # 20 each expected; below 8 has odds of 1 in 20,000
        finally:
            for sock in burst:
                sock.close()
        assert server.output().count("serving http://") == 1  # both front-ends listen; one says where
        taken = subprocess.run(
            [sys.executable, "-m", "voxguard.cli", "serve", "--engine", "simulated", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert taken.returncode == 2 and "already in use" in taken.stderr  # the port is still claimed
        server.terminate()
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.close()


def test_too_little_shared_memory_is_refused_before_anything_starts():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxguard.cli",
            "serve",
            "--engine",
            "simulated",
            "--frontends",
            "500",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "500 front-ends need" in proc.stderr and "shm_size" in proc.stderr
    assert "Traceback" not in proc.stderr and "engine process" not in proc.stderr


def test_the_front_end_count_defaults_to_what_measured_faster():
    from voxguard.processes.launch import frontend_count
    from voxguard.settings import Settings

    assert frontend_count(Settings(device="cpu")) == 1  # CPU forwards want every core (docs/scaling.md)
    assert frontend_count(Settings(engine="simulated")) == 2  # an accelerator: the host side is the limit
    assert frontend_count(Settings(device="cpu", frontends=3)) == 3
