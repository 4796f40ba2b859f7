"""The figures of one evaluation, from the data set's labels and the per-file scores.

Everything the report shows and ``summary.json`` holds is computed here, once, so the Markdown, the HTML,
the JSON and the ``--json`` headline cannot disagree. Positive class for the threshold metrics = spoof
(the service's FAKE verdict).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from ..datasets import BONAFIDE, SPOOF, Dataset, Item
from ..scoring import FAKE, REAL, fake_probability
from .metrics import (
    AsvErrorRates,
    TandemCost,
    ThresholdMetrics,
    asv_error_rates,
    equal_error_rate,
    min_tdcf,
    threshold_metrics,
)
from .runner import Failure, Inconclusive
from .scorefile import AsvScores


@dataclass(frozen=True)
class LabelledScores:
    """The scored files' scores by class; ``attacks[i]`` is the attack of ``spoof[i]``; ``files`` holds
    every scored item with its score, in the data set's order."""

    bonafide: np.ndarray
    spoof: np.ndarray
    attacks: list[str]
    files: list[tuple[Item, float]] = field(default_factory=list)


def labelled_scores(dataset: Dataset, scores: dict[str, float]) -> LabelledScores:
    """Split the scores by the data set's labels; files without a score (failed) are left out."""
    scored = [item for item in dataset.items if item.key in scores]
    spoofs = [item for item in scored if item.label == SPOOF]
    return LabelledScores(
        bonafide=np.array([scores[item.key] for item in scored if item.label == BONAFIDE], dtype=np.float64),
        spoof=np.array([scores[item.key] for item in spoofs], dtype=np.float64),
        attacks=[item.attack for item in spoofs],
        files=[(item, scores[item.key]) for item in scored],
    )


@dataclass(frozen=True)
class ScoredFile:
    """One scored file, its label and the service's verdict on its score at the run's threshold."""

    key: str
    path: str
    label: str
    attack: str
    score: float
    fake_probability: float
    verdict: str  # "REAL" or "FAKE"

    @property
    def correct(self) -> bool:
        return (self.verdict == "FAKE") == (self.label == SPOOF)


def scored_files(labelled: LabelledScores, threshold: float) -> list[ScoredFile]:
    """Every scored file with its verdict, in the data set's order (what ``scores.csv`` lists)."""
    out = []
    for item, score in labelled.files:
        p_fake = fake_probability(score)
        verdict = FAKE if p_fake >= threshold else REAL
        out.append(ScoredFile(item.key, str(item.path), item.label, item.attack, score, p_fake, verdict))
    return out


def misclassified(files: list[ScoredFile], threshold: float) -> list[ScoredFile]:
    """The files with the wrong verdict, the most confident mistakes (farthest from the cut) first."""
    cut = fake_score_cut(threshold)
    wrong = [f for f in files if not f.correct]
    return sorted(wrong, key=lambda f: -abs(f.score - cut))  # stable: a cut of ±inf keeps the order


def is_fake(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The verdict per file score: a file score is the rule's (``scoring.decide``), which calls a file FAKE
    exactly when its fake probability ``sigmoid(-score)`` is at or above the threshold."""
    return np.array([fake_probability(float(s)) >= threshold for s in scores], dtype=bool)


def fake_score_cut(threshold: float) -> float:
    """The score at or below which a file is FAKE: ``ln((1 - t) / t)``, 0 for t = 0.5 (±inf at 0 and 1)."""
    if threshold <= 0.0:
        return math.inf
    if threshold >= 1.0:
        return -math.inf
    return math.log((1.0 - threshold) / threshold)


@dataclass(frozen=True)
class RunInfo:
    """What produced the scores, and how long this run took."""

    model: str
    checkpoint_sha256: str
    engine: str
    device: str
    protocol: str  # "service" or "reference"
    preprocess: str
    batch_size: int
    workers: int
    scored: int  # files scored by this run
    resumed: int  # files whose scores came from an earlier run
    windows: int
    seconds: float
    score_offset: float = 0.0  # the verdict rule the protocol used (scoring.Rule)
    score_scale: float = 1.0
    min_fake_windows: int = 1
    min_reliable_s: float = 0.0
    local_margin: float | None = None


@dataclass(frozen=True)
class AttackFigures:
    """One attack's spoofs against all bona fide files."""

    attack: str
    files: int
    scored: int
    eer: float | None
    detected: float | None  # share of its scored spoofs called FAKE at the service threshold


@dataclass(frozen=True)
class Summary:
    dataset: str
    layout: str
    source: str
    listed: dict[str, int]
    scored: dict[str, int]
    run: RunInfo
    threshold: float  # FAKE when fake_probability >= threshold
    eer: float | None
    eer_threshold: float | None
    eer_note: str | None  # why the EER is missing
    tdcf: TandemCost | None
    asv: AsvErrorRates | None
    tdcf_note: str | None  # why the t-DCF is missing
    at_threshold: ThresholdMetrics
    attacks: list[AttackFigures]
    failures: list[Failure]  # could not be scored; retried by a rerun
    inconclusive: list[Inconclusive]  # too little speech to judge, as the service answers INCONCLUSIVE
    misclassified: list[ScoredFile]  # wrong verdict at ``threshold``, most confident first

    @property
    def score_cut(self) -> float:
        return fake_score_cut(self.threshold)

    def to_dict(self) -> dict:
        data = asdict(self)
        cut = self.score_cut
        data["score_cut"] = cut if math.isfinite(cut) else None
        data["positive_class"] = SPOOF
        return data

    def headline(self) -> dict:
        """The one-line ``--json`` answer: what ran, on what, and the main figures (rates as fractions)."""
        m = self.at_threshold
        return {
            "dataset": self.dataset,
            "layout": self.layout,
            "model": self.run.model,
            "protocol": self.run.protocol,
            "preprocess": self.run.preprocess,
            "files": sum(self.listed.values()),
            "scored": sum(self.scored.values()),
            "inconclusive": len(self.inconclusive),
            "failed": len(self.failures),
            "misclassified": len(self.misclassified),
            "bonafide": self.scored[BONAFIDE],
            "spoof": self.scored[SPOOF],
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "min_tdcf": self.tdcf.min_tdcf if self.tdcf else None,
            "threshold": self.threshold,
            "accuracy": m.accuracy,
            "precision": m.precision,
            "recall": m.recall,
            "f1": m.f1,
        }


def _missing_class(labelled: LabelledScores) -> str | None:
    missing = [
        name for name, s in (("bona fide", labelled.bonafide), ("spoof", labelled.spoof)) if not s.size
    ]
    if not missing:
        return None
    return f"not computable: no {' and no '.join(missing)} files were scored; it needs both classes"


def build_summary(
    dataset: Dataset,
    source: str,
    labelled: LabelledScores,
    failures: list[Failure],
    inconclusive: list[Inconclusive],
    run: RunInfo,
    *,
    threshold: float,
    asv: AsvScores | None,
) -> Summary:
    """All figures; those needing both classes (or ASV scores) get a note instead when they cannot be had."""
    missing = _missing_class(labelled)
    eer = eer_threshold = None
    if missing is None:
        eer, eer_threshold = equal_error_rate(labelled.bonafide, labelled.spoof)
    tdcf, asv_rates, tdcf_note = None, None, missing
    if asv is None:
        tdcf_note = "not computed: no ASV scores given (--asv-scores)"
    elif missing is None:
        try:
            asv_rates = asv_error_rates(asv.target, asv.nontarget, asv.spoof)
            tdcf = min_tdcf(labelled.bonafide, labelled.spoof, asv_rates)
        except ValueError as exc:
            tdcf_note = f"not computable: {exc}"
    spoof_fake = is_fake(labelled.spoof, threshold)
    listed = Counter(item.attack for item in dataset.items if item.label == SPOOF)
    names = np.array(labelled.attacks, dtype=object)
    attacks = []
    for attack in sorted(listed):
        mine = names == attack
        scores = labelled.spoof[mine]
        eer_vs_all = None
        if scores.size and labelled.bonafide.size:
            eer_vs_all = equal_error_rate(labelled.bonafide, scores)[0]
        detected = float(spoof_fake[mine].mean()) if scores.size else None
        attacks.append(AttackFigures(attack, listed[attack], int(mine.sum()), eer_vs_all, detected))
    return Summary(
        dataset=dataset.name,
        layout=dataset.layout,
        source=source,
        listed=dataset.counts(),
        scored={BONAFIDE: int(labelled.bonafide.size), SPOOF: int(labelled.spoof.size)},
        run=run,
        threshold=threshold,
        eer=eer,
        eer_threshold=eer_threshold,
        eer_note=missing,
        tdcf=tdcf,
        asv=asv_rates,
        tdcf_note=None if tdcf else tdcf_note,
        at_threshold=threshold_metrics(is_fake(labelled.bonafide, threshold), spoof_fake),
        attacks=attacks,
        failures=failures,
        inconclusive=inconclusive,
        misclassified=misclassified(scored_files(labelled, threshold), threshold),
    )
