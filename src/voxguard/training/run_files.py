"""What a run directory holds, and reading it back to resume.

- ``best.pt``: the checkpoint with the lowest dev EER so far (ties: lower dev loss), a normal voxguard
  checkpoint that ``voxguard serve/predict --checkpoint`` load; its ``extra["training"]`` holds the
  epoch, metrics and recipe.
- ``last.pt``: the checkpoint after the latest finished epoch, plus ``extra["resume"]``: optimiser,
  scheduler, gradient scaler and torch RNG state, the best result so far and the running weight
  average. ``--resume`` continues from it; it loads for serving like ``best.pt``.
- ``swa.pt``: written once the last epoch is done (unless the recipe turns averaging off): the mean
  of the improving epochs' weights with recomputed batch-norm statistics; ``extra["training"]``
  holds the averaged epochs and the dev metrics. It serves like ``best.pt``.
- ``metrics.jsonl``: one JSON line per epoch (train loss, dev EER, threshold and loss, learning rate,
  time, best so far and its sha256), after a line for epoch 0: the initial weights on the dev set.
- ``steps.csv``: every optimiser step's learning rate and loss.
- ``run.json``: recipe, data sets, initial weights, environment, and where best and last stand (with
  their sha256); rewritten after every epoch.

Checkpoints and ``run.json`` are written atomically. The logs are appended before ``last.pt`` is
replaced, so after a crash they may run ahead of ``last.pt`` but never behind; a resume cuts them back
to the epoch ``last.pt`` holds.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..model.checkpoints import LoadedCheckpoint, load_checkpoint, save_checkpoint
from . import TrainingError
from .recipe import Recipe
from .swa import WeightAverage

logger = logging.getLogger(__name__)

BEST, LAST, SWA = "best.pt", "last.pt", "swa.pt"
METRICS, STEPS, RUN = "metrics.jsonl", "steps.csv", "run.json"
STEP_FIELDS = ("step", "epoch", "lr", "loss")


@dataclass(frozen=True)
class Best:
    """The best epoch so far (1-based) and the sha256 of the ``best.pt`` written for it."""

    epoch: int
    dev_eer: float
    dev_loss: float
    dev_threshold: float
    sha256: str

    def beaten_by(self, dev_eer: float, dev_loss: float) -> bool:
        return (dev_eer, dev_loss) < (self.dev_eer, self.dev_loss)


@dataclass(frozen=True)
class StepRow:
    step: int
    epoch: int
    lr: float
    loss: float


@dataclass(frozen=True)
class ResumeState:
    """Everything ``last.pt`` holds, ready to load into a fresh model, optimiser and scheduler."""

    checkpoint: LoadedCheckpoint
    recipe: Recipe
    init: dict[str, Any]
    epoch: int
    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]
    best: Best | None
    swa: WeightAverage


def optimizer_state_to_plain(state: Mapping[str, Any]) -> dict[str, Any]:
    """Torch keys per-parameter state by int; a weights-only checkpoint needs string keys."""
    return {"state": {str(k): v for k, v in state["state"].items()}, "param_groups": state["param_groups"]}


def optimizer_state_from_plain(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"state": {int(k): v for k, v in state["state"].items()}, "param_groups": state["param_groups"]}


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The global torch generators the loop draws from (initialisation, dropout). Data randomness is
    keyed by ``(seed, epoch, index)`` and has no state to save."""
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if device.type != "cuda":
        return
    if len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    else:
        logger.warning(
            "last.pt holds %d CUDA generator states but this machine has %d GPUs; dropout will differ "
            "from an uninterrupted run",
            len(cuda),
            torch.cuda.device_count(),
        )


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp makes it 0600; the final file is read by other tools and users
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunFiles:
    """The files of one run directory."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.best, self.last, self.swa = self.out / BEST, self.out / LAST, self.out / SWA
        self.metrics, self.steps, self.run = self.out / METRICS, self.out / STEPS, self.out / RUN

    def check_free(self) -> None:
        """Refuse a directory holding a checkpoint: a new run would overwrite it. Logs alone (a run
        that failed in its first epoch, before any checkpoint) are started over."""
        taken = [p.name for p in (self.best, self.last, self.swa) if p.exists()]
        if taken:
            raise TrainingError(
                f"{self.out} already holds a run ({', '.join(taken)}).",
                "add --resume to continue it, or choose another --out",
            )

    def start_new(self) -> None:
        self.check_free()
        self.out.mkdir(parents=True, exist_ok=True)
        self.metrics.write_text("", encoding="utf-8")
        with self.steps.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow(STEP_FIELDS)

    def load_resume(self) -> ResumeState:
        if not self.last.is_file():
            raise TrainingError(
                f"Nothing to resume: {self.last} does not exist.",
                "run once without --resume to start the run",
            )
        checkpoint = load_checkpoint("aasist", path=self.last)
        # load_checkpoint checked format, config and weights; the training state is read alongside.
        extra = torch.load(self.last, map_location="cpu", weights_only=True).get("extra", {})
        if "resume" not in extra or "training" not in extra:
            raise TrainingError(
                f"{self.last} has no training state to resume from.", "it was not written by voxguard train"
            )
        info, resume = extra["training"], extra["resume"]
        best = Best(**resume["best"]) if resume.get("best") else None
        return ResumeState(
            checkpoint=checkpoint,
            recipe=Recipe.from_dict(info["recipe"]),
            init=dict(info["init"]),
            epoch=int(info["epoch"]),
            step=int(info["step"]),
            optimizer=optimizer_state_from_plain(resume["optimizer"]),
            scheduler=dict(resume["scheduler"]),
            scaler=dict(resume["scaler"]),
            rng=dict(resume["rng"]),
            best=best,
            swa=WeightAverage.from_dict(resume.get("swa")),
        )

    def cut_back(self, epochs_done: int) -> None:
        """Drop log lines of epochs after ``last.pt`` (written just before a crash)."""
        if self.metrics.is_file():
            lines = self.metrics.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["epoch"] <= epochs_done]
            _write_atomic(self.metrics, "".join(line + "\n" for line in kept))
        if self.steps.is_file():
            with self.steps.open(newline="", encoding="utf-8") as fh:
                rows = [row for row in csv.DictReader(fh) if int(row["epoch"]) <= epochs_done]
            with self.steps.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, STEP_FIELDS)
                writer.writeheader()
                writer.writerows(rows)

    def append_epoch(self, record: Mapping[str, Any], steps: Sequence[StepRow]) -> None:
        with self.steps.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerows((s.step, s.epoch, repr(s.lr), repr(s.loss)) for s in steps)
        with self.metrics.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record)) + "\n")

    def save_model(self, path: Path, model: nn.Module, name: str, training: dict[str, Any]) -> str:
        """``best.pt`` or ``swa.pt``: a servable checkpoint with no training state."""
        return save_checkpoint(path, model, name=name, extra={"training": training})

    def save_last(self, model: nn.Module, name: str, training: dict[str, Any], resume: dict[str, Any]) -> str:
        return save_checkpoint(self.last, model, name=name, extra={"training": training, "resume": resume})

    def write_run(self, data: Mapping[str, Any]) -> None:
        _write_atomic(self.run, json.dumps(dict(data), indent=2) + "\n")


def read_steps(path: Path) -> list[StepRow]:
    """The rows of a ``steps.csv``, for reports and tests."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [
            StepRow(int(r["step"]), int(r["epoch"]), float(r["lr"]), float(r["loss"]))
            for r in csv.DictReader(fh)
        ]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, epoch 0 (before training) first."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def best_to_dict(best: Best | None) -> dict[str, Any] | None:
    return asdict(best) if best is not None else None
