"""Detection-error metrics on score lists, following the ASVspoof evaluation conventions.

Scores are "higher = more bona fide" (``logit[bona fide] - logit[spoof]``). A trial is accepted as bona
fide when its score is above the threshold, so at threshold ``t`` the miss rate (bona fide rejected) is
the share of bona fide scores ``<= t`` and the false-alarm rate (spoof accepted) the share of spoof
scores ``> t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetCurve:
    """Miss and false-alarm rates at every distinct threshold, from "accept all" to "reject all"."""

    thresholds: np.ndarray
    miss: np.ndarray
    false_alarm: np.ndarray


def _scores(values: object, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"no {what} scores: EER and DET need both bona fide and spoof trials")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} scores contain NaN or infinity")
    return array


def det_curve(bonafide: object, spoof: object) -> DetCurve:
    """Rates at the threshold below every score, then at each sorted score (ties sorted stably)."""
    target, nontarget = _scores(bonafide, "bona fide"), _scores(spoof, "spoof")
    scores = np.concatenate([target, nontarget])
    is_target = np.concatenate([np.ones(target.size), np.zeros(nontarget.size)])
    order = np.argsort(scores, kind="mergesort")
    targets_at_or_below = np.cumsum(is_target[order])
    nontargets_above = nontarget.size - (np.arange(1, scores.size + 1) - targets_at_or_below)
    return DetCurve(
        thresholds=np.concatenate([[scores[order[0]] - 1e-3], scores[order]]),
        miss=np.concatenate([[0.0], targets_at_or_below / target.size]),
        false_alarm=np.concatenate([[1.0], nontargets_above / nontarget.size]),
    )


def equal_error_rate(bonafide: object, spoof: object) -> tuple[float, float]:
    """(EER, threshold): the point where miss and false-alarm rates are closest, their mean as the EER."""
    curve = det_curve(bonafide, spoof)
    best = int(np.argmin(np.abs(curve.miss - curve.false_alarm)))
    return float((curve.miss[best] + curve.false_alarm[best]) / 2), float(curve.thresholds[best])
