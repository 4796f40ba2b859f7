"""Calibration: make a trained model's margin mean what the service prints, then fold it into the weights.

The service reports ``fake_probability = sigmoid(-(margin + offset))``. A freshly trained network's margin
is only a ranking: its softmax is as sure on voices it never heard as on those it trained on. So after
training, a logistic (Platt) fit on the *dev* split maps the file-level margin the service uses (its
most fake window's) to the probability that the file is bona fide, with both classes weighted equally,
so 0 is the balanced decision point. The scale and bias are then folded into the output layer
(``logit[1] - logit[0]`` becomes ``scale * margin + bias``), so the checkpoint serves calibrated scores
with a score offset of 0, on every wiring, with no extra step at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Calibration:
    scale: float
    bias: float

    def apply(self, margins: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(margins, dtype=np.float64) + self.bias


def fit_platt(margins: np.ndarray, bonafide: np.ndarray, iterations: int = 100) -> Calibration:
    """Weighted logistic regression of ``bonafide`` on ``margins`` (class-balanced Newton's method).

    A tiny ridge on the scale keeps it finite when the dev split is perfectly separated (a separable
    set would otherwise push the scale to infinity and every answer to 100 % confidence). Each Newton
    step is halved until the loss goes down: a full step from a poor start can overshoot into a region
    where every sigmoid saturates, and plain Newton then diverges (it did on a fold's dev margins)."""
    x = np.asarray(margins, dtype=np.float64)
    y = np.asarray(bonafide, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError("calibration needs both classes in the dev split")
    w = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum()) * len(y)
    ridge = 1e-2

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.dot(w, np.logaddexp(0.0, z) - y * z) + ridge * a * a / 2)

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh((a * x + b) / 2))  # the sigmoid, without overflow
        r = w * (p - y)
        grad = np.array([np.dot(r, x) + ridge * a, r.sum()])
        h = w * p * (1 - p)
        hess = np.array([[np.dot(h, x * x) + ridge, np.dot(h, x)], [np.dot(h, x), h.sum()]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        for _ in range(50):
            trial = loss(a - step[0], b - step[1])
            if trial <= current:
                break
            step = step / 2
        else:
            break
        a, b, current = a - step[0], b - step[1], trial
        if np.abs(step).max() < 1e-10:
            break
    return Calibration(float(a), float(b))


@torch.no_grad()
def fold_into(layer: nn.Linear, calibration: Calibration) -> None:
    """Rewrite a 2-logit output layer so its margin is ``scale * margin + bias`` (softmax stays valid)."""
    a, b = calibration.scale, calibration.bias
    layer.weight.mul_(a)
    layer.bias.mul_(a)
    layer.bias.add_(torch.tensor([-b / 2, b / 2], dtype=layer.bias.dtype))
