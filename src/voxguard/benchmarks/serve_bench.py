"""``voxguard bench serve`` and ``bench replicas``: the serving stack under a native load generator.

One run measures, with the same body, the same wrk and the same machine:

1. **the load generator's own ceiling**: wrk against nginx answering ``200 {}``;
2. **the framework floor**: a bare FastAPI app under the same uvicorn that only reads the upload and
   answers a small JSON object (``voxguard.benchmarks.framework_floor``);
3. **voxguard**: ``voxguard serve`` with the chosen engine, usually the simulated accelerator
   (``--engine simulated --simulated-ms A,B``), so the serving stack is measured apart from the model.

The report gives voxguard's requests per second, its ratio to the floor, and the generator's margin
over both (it must be well above them, or the figures are the generator's). With the simulated
device it also gives what the device itself could do at full batches, so "share of the device" is
known without a GPU.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import IO

import httpx
import numpy as np
import soundfile as sf

from ..audio.options import WINDOW
from ..inference import bucket_size
from .loadgen import LoadRun, run_wrk, trivial_endpoint

WARMUP_S = 3.0
# Below this, the generator's own limit is close enough to the servers' to shape their figures.
MIN_GENERATOR_MARGIN = 3.0


def upload_body(kind: str) -> tuple[bytes, str]:
    """One model window (4.04 s at 16 kHz) of speech-like sound as a 16-bit WAV or FLAC, and its type."""
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW) / 16000
    voiced = 0.2 * np.sin(2 * np.pi * 140 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    wave = (voiced + 0.02 * rng.standard_normal(WINDOW)).astype(np.float32)
    buf = io.BytesIO()
    fmt = {"wav": "WAV", "flac": "FLAC"}[kind]
    sf.write(buf, wave, 16000, format=fmt, subtype="PCM_16")
    return buf.getvalue(), f"audio/{kind}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], ready_url: str) -> Iterator[subprocess.Popen]:
    """A server subprocess, up once ``ready_url`` answers 200; stopped (SIGTERM, then kill) afterwards."""
    with tempfile.TemporaryFile() as log:  # an unread pipe would block the server
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=log)
        try:
            _wait_ready(ready_url, proc, log)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(url: str, proc: subprocess.Popen, log: IO[bytes], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:g} s")


def voxguard_command(port: int, serve_args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "voxguard.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *serve_args,
    ]


def floor_command(port: int) -> list[str]:
    """The floor app under uvicorn's defaults, as ``voxguard serve`` runs its own app (one process)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "voxguard.benchmarks.framework_floor:app",
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"),
    ]


def _batches(url: str) -> tuple[float, float]:
    """Windows and batches the server has run so far (``voxguard_batch_size`` sum and count)."""
    total = count = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text.splitlines():
        if line.startswith("voxguard_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("voxguard_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def _load(url: str, body: bytes, content_type: str, connections: int, duration_s: float) -> LoadRun:
    """A warm-up run, then the measured one."""
    run_wrk(url, body, content_type, connections=connections, duration_s=WARMUP_S)
    return run_wrk(url, body, content_type, connections=connections, duration_s=duration_s)


def _measure_voxguard(
    base: str, body: bytes, content_type: str, connections: int, duration_s: float
) -> tuple[LoadRun, float]:
    run_wrk(f"{base}/v1/predict", body, content_type, connections=connections, duration_s=WARMUP_S)
    before = _batches(base)
    run = run_wrk(f"{base}/v1/predict", body, content_type, connections=connections, duration_s=duration_s)
    after = _batches(base)
    windows, batches = after[0] - before[0], after[1] - before[1]
    return run, round(windows / batches, 2) if batches else 0.0


def simulated_capacity(simulated_ms: tuple[float, float], max_batch_size: int) -> float | None:
    """Windows a second the simulated device does at full batches: what the serving stack can aim for
    (None for a device that takes no time, whose capacity has no bound)."""
    base_ms, per_window_ms = simulated_ms
    forward_ms = base_ms + per_window_ms * bucket_size(max_batch_size)
    return max_batch_size / (forward_ms / 1000.0) if forward_ms > 0 else None


def bench_serve(
    serve_args: list[str],
    *,
    connections: int,
    duration_s: float,
    body_kind: str = "wav",
    env: dict[str, str] | None = None,
    frontends: list[int] | None = None,
) -> dict:
    """The generator's ceiling, the framework floor and voxguard (started with ``serve_args`` and each
    count of ``frontends``), in one run; ``voxguard`` and ``ratio_to_floor`` are the fastest count's."""
    body, content_type = upload_body(body_kind)
    with trivial_endpoint(free_port()) as url:
        generator = _load(url, body, content_type, connections, duration_s)
    port = free_port()
    with _process(floor_command(port), {}, f"http://127.0.0.1:{port}/docs"):
        floor = _load(f"http://127.0.0.1:{port}/v1/predict", body, content_type, connections, duration_s)
    rows = []
    for count in frontends or [1]:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = voxguard_command(port, [*serve_args, "--frontends", str(count)])
        with _process(command, env or {}, f"{base}/ready"):
            run, mean_batch = _measure_voxguard(base, body, content_type, connections, duration_s)
            models = httpx.get(f"{base}/v1/models", timeout=10, trust_env=False).json()["models"]
        rows.append(
            {
                "frontends": count,
                **asdict(run),
                "mean_batch_size": mean_batch,
                "ratio_to_floor": round(run.throughput_rps / floor.throughput_rps, 3),
            }
        )
    best = max(rows, key=lambda row: row["throughput_rps"])
    margin = round(generator.throughput_rps / max(floor.throughput_rps, best["throughput_rps"]), 2)
    return {
        "load_generator": "wrk 1 thread",
        "connections": connections,
        "duration_s": duration_s,
        "body": f"{body_kind}, {len(body)} bytes, 4.04 s at 16 kHz",
        "serve_args": serve_args,
        "engine": models[0]["engine"],
        "device": models[0]["device"],
        "note": models[0].get("note"),
        "generator": asdict(generator),
        "floor": asdict(floor),
        "by_frontends": rows,
        "frontends": best["frontends"],
        "voxguard": {k: best[k] for k in asdict(generator)},
        "mean_batch_size": best["mean_batch_size"],
        "ratio_to_floor": best["ratio_to_floor"],
        "generator_margin": margin,
        "generator_margin_ok": margin >= MIN_GENERATOR_MARGIN,
    }


def render_serve(report: dict) -> str:
    lines = [
        f"{report['load_generator']}, {report['connections']} connections, {report['duration_s']:g} s each; "
        f"body {report['body']}",
        f"voxguard: engine {report['engine']} on {report['device']}"
        + (f" ({report['note']})" if report.get("note") else ""),
        f"{'server':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'errors':>7}",
    ]
    rows = [("wrk -> nginx 200 {}", report["generator"]), ("bare FastAPI (floor)", report["floor"])]
    rows += [(f"voxguard serve, {r['frontends']} front-end(s)", r) for r in report["by_frontends"]]
    for label, r in rows:
        lines.append(
            f"{label:28} {r['throughput_rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['non_2xx']:>8} {r['socket_errors']:>7}"
            + (
                f"  {r['ratio_to_floor']:.2f}x floor, mean batch {r['mean_batch_size']:.1f}"
                if "frontends" in r
                else ""
            )
        )
    lines.append(
        f"best: {report['frontends']} front-end(s), voxguard / floor = {report['ratio_to_floor']:.2f}x; "
        f"the load generator is {report['generator_margin']:.1f}x faster than the fastest server"
    )
    if not report["generator_margin_ok"]:
        lines.append(
            f"warning: that is under {MIN_GENERATOR_MARGIN:g}x, so the generator may have held the servers "
            "back; rerun with fewer things running on this machine before trusting these figures"
        )
    if "device_capacity_rps" in report:
        lines.append(
            f"the simulated device does {report['device_capacity_rps']:.0f} windows/s at full batches: "
            f"voxguard delivers {report['share_of_device']:.0%} of it; the device alone caps every server of "
            f"one-window requests at {report['device_ratio_to_floor']:.2f}x this floor"
        )
    return "\n".join(lines)


def bench_replicas(
    serve_args: list[str],
    *,
    replicas: list[int],
    connections: int,
    duration_s: float,
    body_kind: str = "wav",
    env: dict[str, str] | None = None,
) -> dict:
    """1, 2, ... ``voxguard serve`` processes sharing one device, each loaded by its own wrk at once
    (``connections`` split between them): does one process's host side limit the device?"""
    from concurrent.futures import ThreadPoolExecutor

    body, content_type = upload_body(body_kind)
    rows = []
    for count in replicas:
        ports = [free_port() for _ in range(count)]
        share = max(1, connections // count)
        with contextlib.ExitStack() as stack:
            for port in ports:
                stack.enter_context(
                    _process(voxguard_command(port, serve_args), env or {}, f"http://127.0.0.1:{port}/ready")
                )
            urls = [f"http://127.0.0.1:{port}/v1/predict" for port in ports]
            for url in urls:
                run_wrk(url, body, content_type, connections=share, duration_s=WARMUP_S)
            with ThreadPoolExecutor(count) as pool:
                load = [
                    pool.submit(run_wrk, url, body, content_type, connections=share, duration_s=duration_s)
                    for url in urls
                ]
                runs = [f.result() for f in load]
        rows.append(
            {
                "replicas": count,
                "throughput_rps": round(sum(r.throughput_rps for r in runs), 1),
                "p50_ms": max(r.p50_ms for r in runs),
                "p99_ms": max(r.p99_ms for r in runs),
                "non_2xx": sum(r.non_2xx for r in runs),
                "socket_errors": sum(r.socket_errors for r in runs),
            }
        )
    return {
        "load_generator": "wrk, 1 thread per replica",
        "connections": connections,
        "duration_s": duration_s,
        "serve_args": serve_args,
        "results": rows,
    }


def render_replicas(report: dict) -> str:
    lines = [
        f"{report['load_generator']}, {report['connections']} connections in all, {report['duration_s']:g} s",
        f"{'replicas':>8} {'req/s':>9} {'vs 1':>6} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'errors':>7}",
    ]
    base = report["results"][0]["throughput_rps"]
    for r in report["results"]:
        lines.append(
            f"{r['replicas']:>8} {r['throughput_rps']:>9.1f} {r['throughput_rps'] / base:>5.2f}x "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['non_2xx']:>8} {r['socket_errors']:>7}"
        )
    return "\n".join(lines)
