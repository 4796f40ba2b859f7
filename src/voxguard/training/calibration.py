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
    a, b = _fit_logistic(np.stack([x, np.ones_like(x)], axis=1), bonafide, iterations)
    return Calibration(a, b)


def fit_scale(margins: np.ndarray, bonafide: np.ndarray, offset: float, iterations: int = 100) -> float:
    """The scale alone of ``sigmoid(scale * (margin + offset))``, fitted like :func:`fit_platt`.

    For a model whose decision point is kept (the official AASIST's offset): its verdicts, and every
    behaviour measured on them, stay as they are; only how sure it says it is changes. A scale at or
    below 0 would mean the model ranks the dev split backwards, and no scale can then keep its
    verdicts: that is refused."""
    x = np.asarray(margins, dtype=np.float64) + offset
    (scale,) = _fit_logistic(x[:, None], bonafide, iterations)
    if scale <= 0:
        raise ValueError(
            f"the fitted scale is {scale:.4g}: on this split the model ranks real speech as fake"
        )
    return scale


def _fit_logistic(design: np.ndarray, bonafide: np.ndarray, iterations: int) -> tuple[float, ...]:
    """Class-balanced logistic regression of ``bonafide`` on ``design``'s columns, the first of them
    ridged; damped Newton from a scale of 1 and every other weight 0."""
    y = np.asarray(bonafide, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError("calibration needs both classes in the dev split")
    w = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum()) * len(y)
    ridge = np.zeros(design.shape[1])
    ridge[0] = 1e-2

    def loss(theta: np.ndarray) -> float:
        z = design @ theta
        return float(np.dot(w, np.logaddexp(0.0, z) - y * z) + np.dot(ridge, theta * theta) / 2)

    theta = np.zeros(design.shape[1])
    theta[0] = 1.0
    current = loss(theta)
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(design @ theta / 2))  # the sigmoid, without overflow
        grad = design.T @ (w * (p - y)) + ridge * theta
        hess = design.T @ (design * (w * p * (1 - p))[:, None]) + np.diag(ridge)
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(theta)), grad)
        for _ in range(50):
            trial = loss(theta - step)
            if trial <= current:
                break
            step = step / 2
        else:
            break
        theta, current = theta - step, trial
        if np.abs(step).max() < 1e-10:
            break
    return tuple(float(t) for t in theta)


@torch.no_grad()
def fold_into(layer: nn.Linear, calibration: Calibration) -> None:
    """Rewrite a 2-logit output layer so its margin is ``scale * margin + bias`` (softmax stays valid)."""
    a, b = calibration.scale, calibration.bias
    layer.weight.mul_(a)
    layer.bias.mul_(a)
    layer.bias.add_(torch.tensor([-b / 2, b / 2], dtype=layer.bias.dtype))
