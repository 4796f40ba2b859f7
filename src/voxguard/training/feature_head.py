"""A linear head on frozen features: a class-balanced, L2-regularised logistic regression.

Why this and not a trained network: with a few thousand training windows and one synthetic family held
out, a heavily regularised linear map is what generalised (docs/evaluation.md); its output is a log-odds
margin in the same units as a calibrated detector's, so the two can simply be added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LinearHead:
    """``margin(x) = ((x - mean) / scale) @ weight + bias``; positive means bona fide."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float

    def margin(self, features: np.ndarray) -> np.ndarray:
        standard = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return standard @ self.weight + self.bias


def fit_linear_head(
    features: np.ndarray, bonafide: np.ndarray, strength: float = 0.001, iterations: int = 200
) -> LinearHead:
    """Minimise ``0.5 |w|^2 + strength * sum_i s_i log(1 + exp(-y_i (w . x_i + b)))`` on standardised
    features, with ``s_i`` weighting both classes equally whatever their counts (scikit-learn's
    ``LogisticRegression(C=strength)`` with balanced sample weights). A small strength is a strong
    prior towards no opinion, which is what held up on families training never had."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(bonafide, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("fit_linear_head needs both bona fide and spoofed examples")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    xs = torch.from_numpy((x - mean) / scale)
    sign = torch.from_numpy(np.where(y, 1.0, -1.0))
    share = y.mean()
    weights = torch.from_numpy(np.where(y, 1 - share, share))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS(
        [w, b], max_iter=iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def loss() -> torch.Tensor:
        solver.zero_grad()
        losses = torch.nn.functional.softplus(-sign * (xs @ w + b))
        value = 0.5 * w.dot(w) + strength * (weights * losses).sum()
        value.backward()
        return value

    solver.step(loss)
    return LinearHead(mean, scale, w.detach().numpy().copy(), float(b.detach()))
