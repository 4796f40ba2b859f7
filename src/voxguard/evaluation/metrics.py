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


@dataclass(frozen=True)
class CostModel:
    """The t-DCF priors and costs. Priors of target, non-target and spoof trials sum to one."""

    p_spoof: float
    p_target: float
    p_nontarget: float
    c_miss_asv: float
    c_fa_asv: float
    c_miss_cm: float
    c_fa_cm: float


# ASVspoof 2019 evaluation plan, as in the official evaluation script and AASIST's evaluation.py.
ASVSPOOF2019_COST_MODEL = CostModel(
    p_spoof=0.05,
    p_target=0.95 * 0.99,
    p_nontarget=0.95 * 0.01,
    c_miss_asv=1.0,
    c_fa_asv=10.0,
    c_miss_cm=1.0,
    c_fa_cm=10.0,
)


@dataclass(frozen=True)
class AsvErrorRates:
    """The fixed ASV system's errors at its own EER threshold (fractions, not percentages)."""

    threshold: float
    eer: float
    false_alarm: float  # non-target trials accepted
    miss: float  # target trials rejected
    spoof_miss: float  # spoof trials rejected by the ASV alone


def asv_error_rates(target: object, nontarget: object, spoof: object) -> AsvErrorRates:
    """ASV operating point of the ASVspoof 2019 t-DCF: the threshold at the ASV's own EER.

    As in the official code, a trial is accepted when its score is ``>=`` that threshold (the EER
    search itself counts ``<=`` as rejected); with continuous scores the two differ by one trial at most.
    """
    trials = {"target": target, "non-target": nontarget, "spoof": spoof}
    arrays = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in trials.items()}
    for name, array in arrays.items():
        if array.size == 0:
            raise ValueError(f"no ASV {name} scores: the t-DCF needs target, non-target and spoof ASV trials")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"ASV {name} scores contain NaN or infinity")
    tar, non, spf = arrays["target"], arrays["non-target"], arrays["spoof"]
    eer, threshold = equal_error_rate(tar, non)
    return AsvErrorRates(
        threshold=threshold,
        eer=eer,
        false_alarm=float(np.mean(non >= threshold)),
        miss=float(np.mean(tar < threshold)),
        spoof_miss=float(np.mean(spf < threshold)),
    )


@dataclass(frozen=True)
class TandemCost:
    """Minimum normalised t-DCF, the CM threshold reaching it, and the two weights behind it."""

    min_tdcf: float
    threshold: float
    c1: float  # weight of the CM miss rate (bona fide blocked before the ASV)
    c2: float  # weight of the CM false-alarm rate (spoof passed on to the ASV)


def min_tdcf(
    bonafide: object, spoof: object, asv: AsvErrorRates, cost: CostModel = ASVSPOOF2019_COST_MODEL
) -> TandemCost:
    """ASVspoof 2019 minimum normalised tandem detection cost of a CM in front of a fixed ASV.

    ``t-DCF(s) = C1 * Pmiss_cm(s) + C2 * Pfa_cm(s)``, with
    ``C1 = p_target * (c_miss_cm - c_miss_asv * Pmiss_asv) - p_nontarget * c_fa_asv * Pfa_asv`` and
    ``C2 = c_fa_cm * p_spoof * (1 - Pmiss_spoof_asv)``, divided by ``min(C1, C2)`` (the cost of the
    better of "no CM" and "CM rejects everything") and minimised over the CM thresholds of the DET
    curve. A value of 1 or more means the CM does not help the ASV.
    """
    priors = (cost.p_target, cost.p_nontarget, cost.p_spoof)
    if min(priors) < 0 or abs(sum(priors) - 1.0) > 1e-10:
        raise ValueError(f"t-DCF priors must be non-negative and sum to 1, got {priors}")
    curve = det_curve(bonafide, spoof)
    if np.unique(curve.thresholds[1:]).size < 3:  # thresholds after the first are the sorted scores
        raise ValueError("t-DCF needs soft scores with at least 3 distinct values, not hard decisions")
    c1 = cost.p_target * (cost.c_miss_cm - cost.c_miss_asv * asv.miss) - (
        cost.p_nontarget * cost.c_fa_asv * asv.false_alarm
    )
    c2 = cost.c_fa_cm * cost.p_spoof * (1.0 - asv.spoof_miss)
    if min(c1, c2) <= 0:
        raise ValueError(
            f"t-DCF weights C1={c1:.4g}, C2={c2:.4g} must be positive: the ASV error rates leave the "
            "CM nothing to decide (e.g. the ASV rejects every spoof)"
        )
    normalised = (c1 * curve.miss + c2 * curve.false_alarm) / min(c1, c2)
    best = int(np.argmin(normalised))
    return TandemCost(float(normalised[best]), float(curve.thresholds[best]), float(c1), float(c2))


@dataclass(frozen=True)
class ThresholdMetrics:
    """Counts and rates at one decision threshold. Positive class = spoof (predicted FAKE).

    Rates whose denominator is zero (no spoof files, no FAKE predictions) are ``None``.
    """

    true_positive: int  # spoof called FAKE
    false_positive: int  # bona fide called FAKE
    true_negative: int  # bona fide called REAL
    false_negative: int  # spoof called REAL
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def threshold_metrics(bonafide_fake: object, spoof_fake: object) -> ThresholdMetrics:
    """Confusion counts and accuracy/precision/recall/F1 from per-file FAKE decisions (booleans),
    so the decision rule stays the service's own (``scoring.decide``)."""
    bona = np.asarray(bonafide_fake, dtype=bool).ravel()
    spf = np.asarray(spoof_fake, dtype=bool).ravel()
    tp, fn = int(spf.sum()), int((~spf).sum())
    fp, tn = int(bona.sum()), int((~bona).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return ThresholdMetrics(
        true_positive=tp,
        false_positive=fp,
        true_negative=tn,
        false_negative=fn,
        accuracy=_ratio(tp + tn, tp + tn + fp + fn),
        precision=precision,
        recall=recall,
        f1=None if precision is None or recall is None else 2 * tp / (2 * tp + fp + fn),
    )
