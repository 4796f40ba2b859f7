"""Benchmarks that compare alternatives inside one process (ratios, not absolute times)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import soundfile as sf
import torch

from .audio import AudioOptions, prepare
from .inference import Detector
from .model.checkpoints import load_checkpoint
from .runtime import set_threads, tune_allocator
from .scoring import Rule, summarize


@dataclass(frozen=True)
class EngineTiming:
    engine: str
    batch_size: int
    ms_per_clip: float


def bench_model(
    name: str,
    *,
    engines: list[str],
    batch_sizes: list[int],
    repeat: int,
    device: str = "auto",
    checkpoint: str | None = None,
    checkpoint_dir: str | None = None,
    allocator: str = "tuned",
    compile_model: bool = False,
    cuda_graphs: bool = True,
    threads: int = 0,
) -> dict:
    """Time each engine at each batch size after one warm-up call; ``ms_per_clip`` is the median run.

    All engines share one process, one random input and one allocator setting, so only the
    engine differs between rows.
    """
    threads_used = set_threads(threads)
    if allocator == "tuned":
        tune_allocator()
    loaded = load_checkpoint(name, checkpoint, checkpoint_dir)
    rng = np.random.default_rng(0)
    inputs = {
        bs: (rng.standard_normal((bs, loaded.config.nb_samp)) * 0.05).astype(np.float32) for bs in batch_sizes
    }
    results: list[EngineTiming] = []
    device_name = ""
    for engine in engines:
        detector = Detector(
            loaded,
            engine=engine,
            device=device,
            compile_model=compile_model,
            allocator_tuning=False,
            cuda_graphs=cuda_graphs,
        )
        device_name = _device_name(detector.device)
        for bs in batch_sizes:
            batch = inputs[bs]
            runs = _time_forward(detector, batch, repeat)
            results.append(EngineTiming(engine, bs, round(statistics.median(runs) * 1000.0 / bs, 3)))
        del detector
    return {
        "model": name,
        "device": device_name,
        "threads": threads_used,
        "torch": torch.__version__,
        "allocator": allocator,
        "cuda_graphs": cuda_graphs,
        "results": [asdict(r) for r in results],
    }


def _time_forward(detector: Detector, batch: np.ndarray, repeat: int) -> list[float]:
    """Seconds per forward over ``repeat`` runs, after one untimed warm-up run."""
    detector.scores(batch)
    runs = []
    for _ in range(repeat):
        _synchronize(detector.device)
        start = time.perf_counter()
        detector.scores(batch)
        _synchronize(detector.device)
        runs.append(time.perf_counter() - start)
    return runs


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def engine_agreement(
    name: str,
    files: list,
    *,
    engine: str,
    device: str = "cpu",
    checkpoint: str | None = None,
    checkpoint_dir: str | None = None,
    options: AudioOptions | None = None,
    rule: Rule | None = None,
) -> dict:
    """Decision agreement and largest score difference of ``engine`` against ``eager`` on real files."""
    loaded = load_checkpoint(name, checkpoint, checkpoint_dir)
    reference = Detector(loaded, engine="eager", device=device)
    candidate = Detector(loaded, engine=engine, device=device)
    options = options or AudioOptions()
    rule = rule or Rule()
    rows = []
    for path in files:
        audio, windows = prepare(Path(path).read_bytes(), options)
        want = summarize(audio, windows, reference.scores(windows.batch), rule)
        got = summarize(audio, windows, candidate.scores(windows.batch), rule)
        window_delta = max(abs(a.score - b.score) for a, b in zip(want.windows, got.windows, strict=True))
        rows.append(
            {"file": str(path), "agree": want.prediction == got.prediction, "max_window_delta": window_delta}
        )
    return {
        "model": name,
        "device": _device_name(reference.device),
        "engine": engine,
        "files": len(rows),
        "decision_agreement": sum(r["agree"] for r in rows) / len(rows),
        "max_score_delta": max(r["max_window_delta"] for r in rows),
        "rows": rows,
    }


@dataclass(frozen=True)
class LoadResult:
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch_size: float
    errors: int


def _one_window_wav(samples: int) -> bytes:
    """A float WAV of exactly one model window, so one request is one clip."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    sf.write(
        buf,
        (rng.standard_normal(samples) * 0.05).astype(np.float32),
        16000,
        format="WAV",
        subtype="FLOAT",
    )
    return buf.getvalue()


def _batch_stats(metrics_text: str) -> tuple[float, float]:
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("voxguard_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("voxguard_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


@dataclass(frozen=True)
class _ClientRun:
    """One load generator's raw figures; several are combined into a :class:`LoadResult`."""

    latencies_ms: list[float]
    errors: int
    mean_batch_size: float  # over the batches the server ran while this client was sending
    started: float  # wall clock (time.time), comparable across processes
    ended: float


async def _drive(url: str, payload: bytes, concurrency: int, requests: int, timeout_s: float) -> _ClientRun:
    """``concurrency`` connections send ``requests`` uploads in total, each waiting for its answer."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits, trust_env=False) as client:
        before = _batch_stats((await client.get("/metrics")).text)

        async def worker() -> None:
            nonlocal errors, sent
            while sent < requests:
                sent += 1
                start = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/predict", files={"file": ("clip.wav", payload, "audio/wav")}
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - start) * 1000.0)
                errors += not ok

        started = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        ended = time.time()
        after = _batch_stats((await client.get("/metrics")).text)
    windows, batches = after[0] - before[0], after[1] - before[1]
    return _ClientRun(latencies, errors, windows / batches if batches else 0.0, started, ended)


def _client_process(url: str, payload: bytes, concurrency: int, requests: int, start_at: float) -> _ClientRun:
    """A load-generating process: waits for the common start time, then drives one server."""
    time.sleep(max(0.0, start_at - time.time()))
    return asyncio.run(_drive(url, payload, concurrency, requests, 300.0))


def _load(urls: list[str], payload: bytes, clients: int, concurrency: int, requests: int) -> LoadResult:
    """``requests`` uploads over ``concurrency`` connections from ``clients`` processes, spread round-robin
    over ``urls``. One Python process tops out at a few hundred uploads a second, which a GPU server can
    exceed, so fast servers need several; with ``clients=1`` the load comes from this process."""
    if clients < 1 or concurrency < clients or requests < clients:
        raise ValueError(
            f"need 1 <= clients <= concurrency, requests; got {clients}, {concurrency}, {requests}"
        )
    if clients == 1 and len(urls) == 1:
        runs = [asyncio.run(_drive(urls[0], payload, concurrency, requests, 300.0))]
    else:
        spawn = multiprocessing.get_context("spawn")  # never fork a process that may hold a CUDA context
        with ProcessPoolExecutor(clients, mp_context=spawn) as pool:
            list(pool.map(time.sleep, [0.5] * clients))  # every client process started and imported
            start_at = time.time() + 1.0
            shares = [(concurrency // clients, requests // clients)] * clients
            shares[0] = (concurrency - (clients - 1) * shares[0][0], requests - (clients - 1) * shares[0][1])
            futures = [
                pool.submit(_client_process, urls[i % len(urls)], payload, c, n, start_at)
                for i, (c, n) in enumerate(shares)
            ]
            runs = [f.result() for f in futures]
    latencies = [ms for run in runs for ms in run.latencies_ms]
    wall = max(run.ended for run in runs) - min(run.started for run in runs)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return LoadResult(
        throughput_rps=round(len(latencies) / wall, 3),
        p50_ms=round(float(p50), 1),
        p95_ms=round(float(p95), 1),
        p99_ms=round(float(p99), 1),
        mean_batch_size=round(statistics.mean(run.mean_batch_size for run in runs), 2),
        errors=sum(run.errors for run in runs),
    )


@contextlib.contextmanager
def _running_servers(count: int, server_args: list[str], env: dict[str, str]) -> Iterator[list[str]]:
    """``count`` ``voxguard serve`` processes on free loopback ports, started together; yields their URLs."""
    command = [sys.executable, "-m", "voxguard.cli", "serve", "--host", "127.0.0.1"]
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(count):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            log = stack.enter_context(tempfile.TemporaryFile())  # an unread pipe would block the server
            proc = subprocess.Popen(
                [*command, "--port", str(port), *server_args],
                env={**os.environ, **env},
                stdout=log,
                stderr=log,
            )
            stack.callback(_stop, proc)
            servers.append((f"http://127.0.0.1:{port}", proc, log))
        for url, proc, log in servers:
            _wait_ready(url, proc, log)
        yield [url for url, _, _ in servers]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _server_args(
    name: str, *, device: str, engine: str, max_batch_size: int, max_wait_ms: float, concurrency: int
) -> list[str]:
    """``voxguard serve`` options for a benchmark; the queue holds every connection's windows 4 times."""
    return [
        *("--models", name, "--device", device, "--engine", engine),
        *("--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms)),
        *("--queue-size", str(max(1024, 4 * concurrency))),
    ]


def _serve_and_load(
    count: int,
    server_args: list[str],
    env: dict[str, str],
    payload: bytes,
    clients: int,
    concurrency: int,
    requests: int,
) -> LoadResult:
    """Start ``count`` servers, warm each up with its share of the connections, load them, stop them."""
    with _running_servers(count, server_args, env) as urls:
        warm = max(1, min(requests, 2 * concurrency) // count)
        for url in urls:
            asyncio.run(_drive(url, payload, max(1, concurrency // count), warm, 300.0))
        return _load(urls, payload, clients, concurrency, requests)


def _wait_ready(url: str, proc: subprocess.Popen, log: IO[bytes], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not become ready in {timeout_s:g} s")


def bench_serve(
    name: str,
    *,
    concurrency: int,
    requests: int,
    clients: int = 1,
    device: str = "auto",
    engine: str = "fast",
    cuda_graphs: bool = True,
    checkpoint_dir: str | None = None,
    max_batch_size: int = 0,
    max_wait_ms: float = 5.0,
) -> dict:
    """Dynamic batching vs ``max_batch_size=1`` through real HTTP, and the raw Detector for scale.

    The raw figure runs the Detector alone, with no HTTP, at the mean batch size the dynamic run
    formed, so ``dynamic.throughput_rps / raw_clips_per_s`` is the share of model throughput the
    service delivers.
    """
    payload = _one_window_wav(64600)
    env = {"VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir)} if checkpoint_dir else {}
    graphs = "--cuda-graphs" if cuda_graphs else "--no-cuda-graphs"
    options = {"device": device, "engine": engine, "max_wait_ms": max_wait_ms, "concurrency": concurrency}
    load = (payload, clients, concurrency, requests)
    dynamic = _serve_and_load(
        1, [*_server_args(name, max_batch_size=max_batch_size, **options), graphs], env, *load
    )
    batch1 = _serve_and_load(1, [*_server_args(name, max_batch_size=1, **options), graphs], env, *load)

    detector = Detector(
        load_checkpoint(name, None, checkpoint_dir), engine=engine, device=device, cuda_graphs=cuda_graphs
    )
    size = max(1, round(dynamic.mean_batch_size))
    _, windows = prepare(payload, AudioOptions())
    batch = np.repeat(windows.batch, size, axis=0)
    runs = _time_forward(detector, batch, max(3, min(20, requests // (4 * size))))
    return {
        "model": name,
        "device": _device_name(detector.device),
        "concurrency": concurrency,
        "clients": clients,
        "cuda_graphs": detector.info.cuda_graphs,
        "raw_batch_size": size,
        "raw_clips_per_s": round(size / statistics.median(runs), 3),
        "dynamic": asdict(dynamic),
        "batch1": asdict(batch1),
    }


def bench_replicas(
    name: str,
    *,
    replicas: list[int],
    clients: int,
    concurrency: int,
    requests: int,
    device: str = "auto",
    engine: str = "fast",
    checkpoint_dir: str | None = None,
    max_batch_size: int = 0,
    max_wait_ms: float = 5.0,
) -> dict:
    """Throughput of 1, 2, ... ``voxguard serve`` processes sharing one device, each its own host side.

    The load comes from ``clients`` processes (``concurrency`` connections in all), spread round-robin
    over the replicas, so that the load generator is never the single process that limits the rate.
    """
    payload = _one_window_wav(64600)
    env = {"VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir)} if checkpoint_dir else {}
    args = _server_args(
        name,
        device=device,
        engine=engine,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        concurrency=concurrency,
    )
    rows = []
    for count in replicas:
        result = _serve_and_load(count, args, env, payload, clients, concurrency, requests)
        rows.append({"replicas": count, "requests": requests, **asdict(result)})
    return {
        "model": name,
        "device": device,
        "engine": engine,
        "clients": clients,
        "concurrency": concurrency,
        "results": rows,
    }


def render_replicas(report: dict) -> str:
    lines = [
        f"model {report['model']} ({report['engine']}) on {report['device']}, "
        f"{report['clients']} client processes, {report['concurrency']} connections",
        f"{'replicas':>8} {'req/s':>8} {'vs 1':>6} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6} {'errors':>6}",
    ]
    base = report["results"][0]["throughput_rps"]
    for r in report["results"]:
        lines.append(
            f"{r['replicas']:>8} {r['throughput_rps']:>8.1f} {r['throughput_rps'] / base:>5.2f}x "
            f"{r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['mean_batch_size']:>6.2f} "
            f"{r['errors']:>6}"
        )
    return "\n".join(lines)


def render_model(report: dict) -> str:
    lines = [
        f"model {report['model']} on {report['device']}, {report['threads']} threads, "
        f"torch {report['torch']}, allocator {report['allocator']}",
        f"{'engine':8} {'batch':>5} {'ms/clip':>10} {'vs eager':>9}",
    ]
    eager = {r["batch_size"]: r["ms_per_clip"] for r in report["results"] if r["engine"] == "eager"}
    for r in report["results"]:
        base = eager.get(r["batch_size"])
        ratio = f"{base / r['ms_per_clip']:.2f}x" if base else ""
        lines.append(f"{r['engine']:8} {r['batch_size']:>5} {r['ms_per_clip']:>10.1f} {ratio:>9}")
    return "\n".join(lines)


def render_serve(report: dict) -> str:
    lines = [
        f"model {report['model']} on {report['device']}, concurrency {report['concurrency']}; "
        f"raw Detector {report['raw_clips_per_s']:.2f} clips/s at batch {report['raw_batch_size']}",
        f"{'mode':8} {'req/s':>8} {'vs raw':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'batch':>6} {'errors':>6}",
    ]
    for mode in ("dynamic", "batch1"):
        r = report[mode]
        share = r["throughput_rps"] / report["raw_clips_per_s"]
        lines.append(
            f"{mode:8} {r['throughput_rps']:>8.2f} {share:>7.0%} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} "
            f"{r['p99_ms']:>8.0f} {r['mean_batch_size']:>6.2f} {r['errors']:>6}"
        )
    return "\n".join(lines)


def render_agreement(report: dict) -> str:
    return (
        f"{report['engine']} vs eager ({report['model']}, {report['files']} files): "
        f"decision agreement {report['decision_agreement']:.1%}, "
        f"max window score difference {report['max_score_delta']:.4f}"
    )
