"""Benchmarks that compare alternatives inside one process (ratios, not absolute times)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio.options import AudioOptions
from ..inference import Detector
from ..model.checkpoints import load_checkpoint
from ..pipeline import Pipeline
from ..process_tuning import set_threads, tune_allocator
from ..scoring import RuleOptions


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
    options: AudioOptions,
    rule: RuleOptions,
) -> dict:
    """Decision agreement and largest margin difference of ``engine`` against ``eager`` on real files.

    Decisions follow the model's own rule (its offset and scale); the difference is taken on the
    network's margins, before the rule, so it reads the same whatever the model's scale."""
    loaded = load_checkpoint(name, checkpoint, checkpoint_dir)
    reference = Detector(loaded, engine="eager", device=device)
    candidate = Detector(loaded, engine=engine, device=device)
    pipeline = Pipeline(options, rule.for_loaded(loaded))
    rows = []
    for path in files:
        audio, windows = pipeline.windows(Path(path).read_bytes())
        want_margins = reference.scores(windows.batch)
        got_margins = candidate.scores(windows.batch)
        want = pipeline.verdict(audio, windows, want_margins)
        got = pipeline.verdict(audio, windows, got_margins)
        window_delta = float(np.max(np.abs(want_margins - got_margins)))
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


def render_agreement(report: dict) -> str:
    return (
        f"{report['engine']} vs eager ({report['model']}, {report['files']} files): "
        f"decision agreement {report['decision_agreement']:.1%}, "
        f"max window margin difference {report['max_score_delta']:.4f}"
    )
