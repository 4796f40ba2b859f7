"""The training loop: an epoch of optimiser steps, the dev EER, then the checkpoints, until done.

CPU runs are bit-for-bit reproducible for a given seed and thread count, and a resumed run continues
exactly as an uninterrupted one would (same data order, crops, augmentations, dropout, learning rate).
On CUDA, cuDNN picks the fastest (not bitwise deterministic) kernels, so runs agree only statistically.

Mixed precision (CUDA only): ``bf16`` autocast where the GPU supports it (Ampere and later) and
``fp16`` autocast with a gradient scaler otherwise. bfloat16 keeps float32's exponent range, so no loss
scaling, no skipped steps and no scaler state are needed, at the same tensor-core speed as float16;
float16 is there for older GPUs (V100, T4). The dev set is always scored without autocast, as the
float32 serving engines score, so the EER that picks ``best.pt`` is the one they reproduce.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import __version__
from ..audio.options import WINDOW
from ..datasets import Dataset, load_dataset
from ..evaluation.metrics import equal_error_rate
from ..inference import resolve_device
from ..model.checkpoints import load_checkpoint
from ..model.config import ARCHITECTURES
from ..model.factory import build_model as new_model
from ..model.locate import REGISTRY
from ..process_tuning import set_threads, tune_allocator
from . import TrainingError
from .augment import Augmenter
from .data import (
    CACHE_MODES,
    DevWindows,
    EpochBatches,
    TrainWindows,
    check_labels,
    decode_all,
    make_loader,
)
from .recipe import Recipe, make_criterion, make_optimizer
from .run_files import (
    Best,
    ResumeState,
    RunFiles,
    StepRow,
    best_to_dict,
    capture_rng,
    optimizer_state_to_plain,
    restore_rng,
)
from .swa import WeightAverage

logger = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime:
    """How this invocation runs. Unlike the recipe, these may change between a run and its resume."""

    out: Path
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None  # DataLoader worker processes; None = 0 on CPU, up to 8 on CUDA
    cache: str = "memory"
    eval_batch_size: int = 32
    threads: int = 0
    checkpoint_dir: Path | None = None
    progress: bool = True
    resume: bool = False
    stop_after: int | None = None  # epochs to run in this invocation, then stop (resumably)

    def __post_init__(self) -> None:
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval batch size must be at least 1, got {self.eval_batch_size}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop after must be at least 1 epoch, got {self.stop_after}")


@dataclass(frozen=True)
class DevResult:
    eer: float
    threshold: float
    loss: float


@dataclass(frozen=True)
class SwaResult:
    """``swa.pt``: the mean of the improving epochs' weights, with fresh batch-norm statistics."""

    epochs: list[int]
    dev_eer: float
    dev_loss: float
    dev_threshold: float
    sha256: str


@dataclass(frozen=True)
class RunSummary:
    out: Path
    epochs_done: int
    complete: bool
    best: Best | None
    last_sha256: str
    swa: SwaResult | None = None


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for plain float32."""
    if precision not in PRECISIONS:
        raise TrainingError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise TrainingError(
            f"--precision {precision} needs a CUDA device, not {device}.", "use --precision fp32 on CPU"
        )
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def variant_of(model: nn.Module) -> str | None:
    return next((name for name, config in ARCHITECTURES.items() if config == model.config), None)


def build_model(recipe: Recipe, checkpoint_dir: Path | None) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model (seeded) or the ``init`` checkpoint's weights, plus a note of where they came from."""
    torch.manual_seed(recipe.seed)
    if recipe.init is None:
        return new_model(ARCHITECTURES[recipe.model or "aasist"]), {"source": "scratch"}
    if recipe.init in REGISTRY:
        loaded = load_checkpoint(recipe.init, checkpoint_dir=checkpoint_dir)
    else:  # a file: a voxguard checkpoint carries its config; a plain state_dict takes --model's
        loaded = load_checkpoint(recipe.model or "aasist", path=recipe.init)
    variant = variant_of(loaded.model)
    if recipe.model is not None and variant != recipe.model:
        raise TrainingError(
            f"--init {recipe.init} holds a {variant or 'custom'} model, not {recipe.model}.",
            f"drop --model, or pass --model {variant}" if variant else "drop --model",
        )
    return loaded.model, {
        "source": recipe.init,
        "name": loaded.name,
        "path": str(loaded.path),
        "sha256": loaded.sha256,
    }


def _loaders(
    recipe: Recipe, runtime: Runtime, train_set: Dataset, dev_set: Dataset, device: torch.device
) -> tuple[TrainWindows, DataLoader, int]:
    workers = (
        runtime.workers
        if runtime.workers is not None
        else (0 if device.type == "cpu" else min(8, os.cpu_count() or 1))
    )
    train_audio = dev_audio = None
    if runtime.cache == "memory":
        threads = max(workers, os.cpu_count() or 1)
        train_audio = decode_all(
            train_set.items, keep=None, threads=threads, progress=runtime.progress, what="train"
        )
        dev_audio = decode_all(
            dev_set.items, keep=WINDOW, threads=threads, progress=runtime.progress, what="dev"
        )
    augment = Augmenter(recipe.augment, recipe.augment_probability) if recipe.augment else None
    train_windows = TrainWindows(train_set.items, seed=recipe.seed, augment=augment, waveforms=train_audio)
    dev_loader = make_loader(
        DevWindows(dev_set.items, dev_audio),
        batch_size=runtime.eval_batch_size,
        workers=workers,
        seed=recipe.seed,
        pin_memory=device.type == "cuda",
    )
    return train_windows, dev_loader, workers


@dataclass
class _Optimisation:
    """The model and everything that updates it, so one optimiser step is one call."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.CrossEntropyLoss
    device: torch.device
    amp_dtype: torch.dtype | None

    def step(self, x: torch.Tensor, y: torch.Tensor, where: str) -> tuple[float, float]:
        """One optimiser step on a batch; returns (learning rate used, loss)."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            _, logits = self.model(x)
        loss = self.criterion(logits.float(), y)
        # A float16 overflow is the scaler's to handle (it skips the step); anywhere else it is a bug.
        if not self.scaler.is_enabled() and not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss.item()} at {where}.",
                "lower --lr, or check the training audio for NaN or extreme values",
            )
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return lr, loss.item()

    def resume_state(self, best: Best | None, average: WeightAverage) -> dict[str, Any]:
        return {
            "optimizer": optimizer_state_to_plain(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(self.device),
            "best": best_to_dict(best),
            "swa": average.to_dict(),
        }


@dataclass
class _Session:
    """One invocation of :func:`train`: what it trains with, and how far the run has got."""

    recipe: Recipe
    runtime: Runtime
    run: RunFiles
    opt: _Optimisation
    name: str
    about: dict[str, Any]  # what every checkpoint records about the run
    context: dict[str, Any]  # what run.json records besides the progress
    train_windows: TrainWindows
    dev_loader: DataLoader
    workers: int
    epoch: int = 0  # the last epoch done
    step: int = 0
    best: Best | None = None
    last_sha: str = ""
    average: WeightAverage = field(default_factory=WeightAverage)

    def evaluate(self, model: nn.Module | None = None) -> DevResult:
        """The dev result of ``model`` (default: the model being trained)."""
        model = self.opt.model if model is None else model
        return evaluate(model, self.dev_loader, self.opt.criterion, self.opt.device, self.runtime.progress)

    def train_loader(self, epoch: int) -> DataLoader:
        return _train_loader(self.train_windows, self.recipe, epoch, self.workers, self.opt.device)


def train(recipe: Recipe, runtime: Runtime) -> RunSummary:
    """Run (or continue) training as ``recipe`` says and write the run directory ``runtime.out``."""
    session, resumed = _setup(recipe, runtime)
    if not resumed:
        _baseline(session)
    final = (
        recipe.epochs
        if runtime.stop_after is None
        else min(recipe.epochs, session.epoch + runtime.stop_after)
    )
    for epoch in range(session.epoch + 1, final + 1):
        _epoch(session, epoch)
    return _finish(session)


def _open(
    recipe: Recipe, runtime: Runtime
) -> tuple[RunFiles, torch.device, torch.dtype | None, ResumeState | None]:
    """The run directory, the device, the autocast dtype and what ``last.pt`` holds to resume from, all
    checked before any slow work; the process is set up for training on that device."""
    run = RunFiles(runtime.out)
    try:
        device = resolve_device(runtime.device)
    except ValueError as exc:
        raise TrainingError(str(exc), "use --device cpu, or cuda on a machine with a GPU") from exc
    amp_dtype = resolve_precision(runtime.precision, device)
    if not runtime.resume:
        run.check_free()  # before any slow work: the data sets, the initial weights
    resume = run.load_resume() if runtime.resume else None
    if resume is not None and (changed := recipe.differences(resume.recipe)):
        raise TrainingError(
            f"--resume with a different recipe than {run.last} was trained with ({'; '.join(changed)}).",
            "repeat the original command line and add --resume",
        )
    if device.type == "cpu":
        tune_allocator()  # several times faster steps: see voxguard.process_tuning
    else:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: autotune once, reuse every step
    set_threads(runtime.threads)
    return run, device, amp_dtype, resume


def _setup(recipe: Recipe, runtime: Runtime) -> tuple[_Session, bool]:
    """The session: data, model, optimiser and loaders, new or as ``last.pt`` left them; and whether
    it resumes a run."""
    run, device, amp_dtype, resume = _open(recipe, runtime)
    train_set, dev_set, steps_per_epoch = _data_sets(recipe)
    if resume is None:
        model, init = build_model(recipe, runtime.checkpoint_dir)
        run.start_new()
    else:
        model, init = resume.checkpoint.model, resume.init
    variant = variant_of(model) or "custom"
    name = resume.checkpoint.name if resume else recipe.name or f"{variant}-{runtime.out.resolve().name}"
    optimizer, scheduler = make_optimizer(model.to(device), recipe, steps_per_epoch)
    opt = _Optimisation(
        model,
        optimizer,
        scheduler,
        torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
        make_criterion(recipe, device),
        device,
        amp_dtype,
    )
    restored = _restore(opt, run, resume, recipe.epochs) if resume is not None else {}
    train_windows, dev_loader, workers = _loaders(recipe, runtime, train_set, dev_set, device)
    about = {
        "recipe": recipe.to_dict(),
        "variant": variant,
        "init": init,
        "data": {"train": _describe(train_set), "dev": _describe(dev_set)},
    }
    context = _context(about, name, steps_per_epoch * recipe.epochs, steps_per_epoch, opt, runtime, workers)
    parameters = sum(p.numel() for p in model.parameters())
    logger.info(
        "training %s (%s, %d parameters) on %s in %s from %s",
        *(name, variant, parameters, device, context["environment"]["precision"], init["source"]),
    )
    session = _Session(
        recipe, runtime, run, opt, name, about, context, train_windows, dev_loader, workers, **restored
    )
    return session, resume is not None


def _restore(opt: _Optimisation, run: RunFiles, resume: ResumeState, epochs: int) -> dict[str, Any]:
    """Load the optimiser, scheduler, scaler and random state ``last.pt`` saved; drop what the logs
    recorded after it. Returns the progress to continue from (``_Session``'s fields)."""
    opt.optimizer.load_state_dict(resume.optimizer)
    opt.scheduler.load_state_dict(resume.scheduler)
    if opt.scaler.is_enabled() and resume.scaler:
        opt.scaler.load_state_dict(resume.scaler)
    restore_rng(resume.rng, opt.device)
    run.cut_back(resume.epoch)
    logger.info("resuming %s after epoch %d/%d (step %d)", run.last, resume.epoch, epochs, resume.step)
    return {
        "epoch": resume.epoch,
        "step": resume.step,
        "best": resume.best,
        "last_sha": resume.checkpoint.sha256,
        "average": resume.swa,
    }


def _context(
    about: dict[str, Any],
    name: str,
    total_steps: int,
    steps_per_epoch: int,
    opt: _Optimisation,
    runtime: Runtime,
    workers: int,
) -> dict[str, Any]:
    """What run.json records of the run and the machine it runs on."""
    return {
        **about,
        "name": name,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "environment": {
            "voxguard": __version__,
            "torch": torch.__version__,
            "device": str(opt.device),
            "precision": str(opt.amp_dtype).removeprefix("torch.") if opt.amp_dtype else "float32",
            "threads": torch.get_num_threads(),
            "workers": workers,
            "cache": runtime.cache,
        },
    }


def _baseline(s: _Session) -> None:
    """Epoch 0: the initial weights on the dev set, what a fine-tuning run must beat. Logged only;
    best.pt is chosen among trained epochs."""
    started = time.perf_counter()
    dev = s.evaluate()
    baseline = {
        "epoch": 0,
        "step": 0,
        "dev_eer": dev.eer,
        "dev_threshold": dev.threshold,
        "dev_loss": dev.loss,
    }
    lr = s.opt.scheduler.get_last_lr()[0]
    s.run.append_epoch({**baseline, "lr": lr, "seconds": time.perf_counter() - started}, [])
    logger.info(
        "before training: dev EER %.2f%% (threshold %.3f, loss %.4f)", 100 * dev.eer, dev.threshold, dev.loss
    )


def _epoch(s: _Session, epoch: int) -> None:
    """One epoch: the optimiser steps, the dev result, then best.pt (if it improved), last.pt and the logs."""
    started = time.perf_counter()
    rows = _train_epoch(s.opt, s.train_loader(epoch), s.step, epoch, s.recipe.epochs, s.runtime.progress)
    s.step += len(rows)
    train_seconds = time.perf_counter() - started
    dev = s.evaluate()
    info = {
        "epoch": epoch,
        "step": s.step,
        "train_loss": float(np.mean([r.loss for r in rows])),
        "dev_eer": dev.eer,
        "dev_threshold": dev.threshold,
        "dev_loss": dev.loss,
        **s.about,
    }
    improved = s.best is None or s.best.beaten_by(dev.eer, dev.loss)
    if improved:
        sha = s.run.save_model(s.run.best, s.opt.model, s.name, info)
        s.best = Best(epoch, dev.eer, dev.loss, dev.threshold, sha)
        if s.recipe.swa:
            s.average.add(s.opt.model, epoch)
    best = s.best
    assert best is not None  # set above when there was none
    record = {
        **{k: info[k] for k in ("epoch", "step", "train_loss", "dev_eer", "dev_threshold", "dev_loss")},
        "lr": s.opt.scheduler.get_last_lr()[0],
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / len(rows),
        "seconds": time.perf_counter() - started,
        "improved": improved,
        **{"best_epoch": best.epoch, "best_dev_eer": best.dev_eer, "best_sha256": best.sha256},
    }
    s.run.append_epoch(record, rows)
    _checkpoint_last(s, epoch, info)
    logger.info(
        "epoch %d/%d: train loss %.4f, dev EER %.2f%% (threshold %.3f, loss %.4f), %.2f s/step; %s; "
        "last.pt sha256 %s",
        *(epoch, s.recipe.epochs, info["train_loss"], 100 * dev.eer, dev.threshold, dev.loss),
        record["seconds_per_step"],
        f"new best, best.pt sha256 {best.sha256}" if improved else f"best is still epoch {best.epoch}",
        s.last_sha,
    )


def _checkpoint_last(s: _Session, epoch: int, info: dict[str, Any]) -> None:
    """last.pt (the weights and everything a resume needs) and run.json, after ``epoch``."""
    s.epoch = epoch
    s.last_sha = s.run.save_last(s.opt.model, s.name, info, s.opt.resume_state(s.best, s.average))
    s.run.write_run(_run_json(s.context, epoch, s.recipe.epochs, s.best, s.last_sha, s.run))


def _finish(s: _Session) -> RunSummary:
    """Once every epoch is done, swa.pt (if the recipe asks for it); the summary either way."""
    complete = s.epoch >= s.recipe.epochs
    swa = None
    # Also when resuming a complete run whose swa.pt was never written (stopped after last.pt).
    if complete and s.recipe.swa and s.average.epochs and not s.run.swa.exists():
        swa = _write_swa(s)
        s.run.write_run(_run_json(s.context, s.epoch, s.recipe.epochs, s.best, s.last_sha, s.run, swa))
    if complete:
        assert s.best is not None  # every complete run trained an epoch
        logger.info(
            "run complete: best epoch %d, dev EER %.2f%%: %s", s.best.epoch, 100 * s.best.dev_eer, s.run.best
        )
    else:
        logger.info(
            "stopped after epoch %d/%d; continue with the same command plus --resume",
            s.epoch,
            s.recipe.epochs,
        )
    return RunSummary(s.runtime.out, s.epoch, complete, s.best, s.last_sha, swa)


def _train_loader(
    train_windows: TrainWindows, recipe: Recipe, epoch: int, workers: int, device: torch.device
) -> DataLoader:
    return make_loader(
        train_windows,
        batch_sampler=EpochBatches(len(train_windows), recipe.batch_size, recipe.seed, epoch),
        workers=workers,
        seed=recipe.seed,
        pin_memory=device.type == "cuda",
    )


def _write_swa(s: _Session) -> SwaResult:
    """The official recipe's last step: average, recompute batch-norm statistics, score, save."""
    loader = s.train_loader(s.recipe.epochs + 1)
    averaged = s.average.averaged(s.opt.model)
    progress = s.runtime.progress
    batches = tqdm(loader, desc="swa batch-norm", unit="step", file=sys.stderr, disable=not progress)
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches, averaged, s.opt.device)
    dev = s.evaluate(averaged)
    info = {
        "swa_epochs": list(s.average.epochs),
        "dev_eer": dev.eer,
        "dev_threshold": dev.threshold,
        "dev_loss": dev.loss,
        **s.about,
    }
    sha = s.run.save_model(s.run.swa, averaged, s.name, info)
    result = SwaResult(list(s.average.epochs), dev.eer, dev.loss, dev.threshold, sha)
    logger.info(
        "weights averaged over epochs %s: dev EER %.2f%% (threshold %.3f, loss %.4f); swa.pt sha256 %s",
        *(result.epochs, 100 * dev.eer, dev.threshold, dev.loss, result.sha256),
    )
    return result


def _data_sets(recipe: Recipe) -> tuple[Dataset, Dataset, int]:
    train_set = load_dataset(Path(recipe.train), _path(recipe.train_audio_dir))
    dev_set = load_dataset(Path(recipe.dev), _path(recipe.dev_audio_dir))
    check_labels(train_set, "training")
    check_labels(dev_set, "dev")
    steps_per_epoch = len(train_set.items) // recipe.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(
            f"the training set has {len(train_set.items)} items, less than one batch of {recipe.batch_size}.",
            "lower --batch-size",
        )
    for role, dataset in (("train", train_set), ("dev", dev_set)):
        logger.info("%s set %s (%s layout): %s", role, dataset.name, dataset.layout, dataset.counts())
    logger.info("%d steps per epoch", steps_per_epoch)
    return train_set, dev_set, steps_per_epoch


def _train_epoch(
    opt: _Optimisation, loader: DataLoader, step: int, epoch: int, epochs: int, progress: bool
) -> list[StepRow]:
    opt.model.train()
    rows: list[StepRow] = []
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}/{epochs}",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    for x, y in bar:
        n = step + len(rows) + 1
        lr, loss = opt.step(x, y, where=f"step {n} (epoch {epoch})")
        rows.append(StepRow(n, epoch, lr, loss))
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
    return rows


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, criterion: nn.CrossEntropyLoss, device: torch.device, progress: bool
) -> DevResult:
    """Dev EER on ``logit[bona fide] - logit[spoof]`` (the served score), in float32, plus the loss."""
    model.eval()
    scores, labels = [], []
    loss_sum = weight_sum = 0.0
    for x, y in tqdm(loader, desc="dev", unit="batch", file=sys.stderr, disable=not progress, leave=False):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        _, logits = model(x)
        logits = logits.float()
        loss_sum += nn.functional.cross_entropy(logits, y, weight=criterion.weight, reduction="sum").item()
        weight_sum += criterion.weight[y].sum().item()
        scores.append((logits[:, 1] - logits[:, 0]).cpu().numpy())
        labels.append(y.cpu().numpy())
    score, label = np.concatenate(scores), np.concatenate(labels)
    if not np.all(np.isfinite(score)):
        raise TrainingError("the model gives NaN or infinite dev scores.", "lower --lr")
    eer, threshold = equal_error_rate(score[label == 1], score[label == 0])
    return DevResult(eer, threshold, loss_sum / weight_sum)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _describe(dataset: Dataset) -> dict[str, Any]:
    return {"name": dataset.name, "layout": dataset.layout, "items": len(dataset.items), **dataset.counts()}


def _run_json(
    context: dict[str, Any],
    epoch: int,
    epochs: int,
    best: Best | None,
    last_sha: str,
    run: RunFiles,
    swa: SwaResult | None = None,
) -> dict[str, Any]:
    data = {
        **context,
        "epochs_done": epoch,
        "complete": epoch >= epochs,
        "best": {**(best_to_dict(best) or {}), "path": str(run.best)},
        "last": {"epoch": epoch, "sha256": last_sha, "path": str(run.last)},
    }
    if swa is not None:
        data["swa"] = {**asdict(swa), "path": str(run.swa)}
    return data
