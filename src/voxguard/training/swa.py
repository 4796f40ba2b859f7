"""Stochastic weight averaging as the official AASIST ``main.py`` applies it (``torchcontrib.optim.SWA``).

Every epoch that sets a new best dev result adds the model's parameters to a running mean
(``update_swa``). After the last epoch the mean goes into a copy of the model, whose batch-norm
statistics are then recomputed on the training data (``bn_update``): averaged weights no longer match
any epoch's running statistics. The trainer scores that model on the dev set and writes ``swa.pt``;
``best.pt`` stays the single selected epoch, so a user can serve whichever dev scores better.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass
class WeightAverage:
    """The mean of the parameters at ``epochs``, kept on the CPU in float32 (it rides in ``last.pt``)."""

    epochs: list[int] = field(default_factory=list)
    mean: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, model: nn.Module, epoch: int) -> None:
        n = len(self.epochs)
        for name, param in model.named_parameters():
            value = param.detach().to("cpu", torch.float32, copy=True)
            if n == 0:
                self.mean[name] = value
            else:
                self.mean[name] += (value - self.mean[name]) / (n + 1)
        self.epochs.append(epoch)

    def averaged(self, model: ModelT) -> ModelT:
        """A copy of ``model`` holding the mean parameters; its buffers (batch-norm's) are ``model``'s."""
        if not self.epochs:
            raise ValueError("no epoch has been averaged yet")
        out = copy.deepcopy(model)
        with torch.no_grad():
            for name, param in out.named_parameters():
                param.copy_(self.mean[name])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs), "mean": dict(self.mean)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> WeightAverage:
        if not data:
            return cls()
        return cls([int(e) for e in data["epochs"]], dict(data["mean"]))
