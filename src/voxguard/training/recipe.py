"""The official AASIST training recipe (clovaai/aasist ``config/AASIST.conf`` and ``main.py``) as data.

Adam (lr 1e-4, betas 0.9/0.999, weight decay 1e-4, no AMSGrad), a cosine learning-rate curve stepped
after every batch from ``lr`` down to ``lr_min`` = 5e-6 over all ``epochs x steps_per_epoch`` steps,
batch 24, 100 epochs, cross-entropy weighted 0.1 for spoof (logit 0) and 0.9 for bona fide (logit 1),
which offsets the roughly 1:9 bona fide:spoof balance of ASVspoof 2019 LA, and at the end stochastic
weight averaging of the epochs that improved the dev result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from ..model.config import ARCHITECTURES

if TYPE_CHECKING:  # torch is imported where it is used, so the CLI can read the defaults without it
    import torch
    from torch import nn


@dataclass(frozen=True)
class Recipe:
    """Everything that decides what a run computes. A resumed run must have the same recipe."""

    train: str
    dev: str
    train_audio_dir: str | None = None
    dev_audio_dir: str | None = None
    model: str | None = None  # the architecture; None: --init's, or aasist from scratch
    init: str | None = None  # a registry name or a checkpoint path; None trains from scratch
    name: str | None = None  # the name the checkpoints record (the server reports it); None: variant-outdir
    epochs: int = 100
    batch_size: int = 24
    lr: float = 1e-4
    lr_min: float = 5e-6
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    spoof_weight: float = 0.1
    bonafide_weight: float = 0.9
    seed: int = 1234
    augment: tuple[str, ...] = ()
    augment_probability: float = 0.5
    swa: bool = True  # average the improving epochs' weights into swa.pt at the end, as main.py does

    def __post_init__(self) -> None:
        if self.model is not None and self.model not in ARCHITECTURES:
            raise ValueError(f"model must be one of {', '.join(ARCHITECTURES)}, got {self.model!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.lr_min <= self.lr:
            raise ValueError(f"need 0 < lr_min <= lr, got lr {self.lr}, lr_min {self.lr_min}")
        if min(self.spoof_weight, self.bonafide_weight) <= 0:
            raise ValueError(
                f"class weights must be positive, got {self.spoof_weight}, {self.bonafide_weight}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists for tuples), so it fits in a checkpoint and in JSON."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)

    def differences(self, other: Recipe) -> list[str]:
        """``"field: mine != theirs"`` for every field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]


@dataclass(frozen=True)
class CosineSchedule:
    """Learning-rate factor at optimiser step ``step``: 1 at step 0, ``floor`` at ``total_steps``.

    A plain callable object (not a lambda) so ``LambdaLR.state_dict`` records its parameters and a
    resumed run can check them.
    """

    total_steps: int
    floor: float

    def __call__(self, step: int) -> float:
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))


def make_optimizer(
    model: nn.Module, recipe: Recipe, steps_per_epoch: int
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam plus the per-step cosine schedule over the whole run."""
    import torch

    optimizer = torch.optim.Adam(
        model.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay, amsgrad=False
    )
    schedule = CosineSchedule(recipe.epochs * steps_per_epoch, recipe.lr_min / recipe.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def make_criterion(recipe: Recipe, device: torch.device) -> nn.CrossEntropyLoss:
    """Weighted cross-entropy; the weight order follows the logits: index 0 spoof, index 1 bona fide."""
    import torch
    from torch import nn

    weight = torch.tensor([recipe.spoof_weight, recipe.bonafide_weight], dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight)
