"""Benchmarks that compare alternatives inside one process (ratios, not absolute times)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import AudioOptions, prepare
from .inference import Detector
from .model.checkpoints import load_checkpoint
from .runtime import set_threads, tune_allocator
from .scoring import summarize


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
            loaded, engine=engine, device=device, compile_model=compile_model, allocator_tuning=False
        )
        device_name = _device_name(detector.device)
        for bs in batch_sizes:
            batch = inputs[bs]
            detector.scores(batch)
            runs = []
            for _ in range(repeat):
                _synchronize(detector.device)
                start = time.perf_counter()
                detector.scores(batch)
                _synchronize(detector.device)
                runs.append((time.perf_counter() - start) * 1000.0 / bs)
            results.append(EngineTiming(engine, bs, round(statistics.median(runs), 3)))
        del detector
    return {
        "model": name,
        "device": device_name,
        "threads": threads_used,
        "torch": torch.__version__,
        "allocator": allocator,
        "results": [asdict(r) for r in results],
    }


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
    checkpoint: str | None = None,
    checkpoint_dir: str | None = None,
    options: AudioOptions | None = None,
    threshold: float = 0.5,
) -> dict:
    """Decision agreement and largest score difference of ``engine`` against ``eager`` on real files."""
    loaded = load_checkpoint(name, checkpoint, checkpoint_dir)
    reference = Detector(loaded, engine="eager", device="cpu")
    candidate = Detector(loaded, engine=engine, device="cpu")
    options = options or AudioOptions()
    rows = []
    for path in files:
        audio, windows = prepare(Path(path).read_bytes(), options)
        want = summarize(audio, windows, reference.scores(windows.batch), threshold=threshold)
        got = summarize(audio, windows, candidate.scores(windows.batch), threshold=threshold)
        window_delta = max(abs(a.score - b.score) for a, b in zip(want.windows, got.windows, strict=True))
        rows.append(
            {"file": str(path), "agree": want.prediction == got.prediction, "max_window_delta": window_delta}
        )
    return {
        "model": name,
        "engine": engine,
        "files": len(rows),
        "decision_agreement": sum(r["agree"] for r in rows) / len(rows),
        "max_score_delta": max(r["max_window_delta"] for r in rows),
        "rows": rows,
    }
