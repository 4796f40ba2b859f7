"""Held-out evaluation of detectors on a corpus split, as the service would answer each file.

Files are decoded and cut once (:func:`cut`); each detector scores every window once (:func:`score`);
verdicts under any rule are then cheap (:func:`judge`), so thresholds and offsets can be picked on dev
and applied to test without scoring again. :func:`summarise` gives the figures the detector issue asks
for: EER on file scores, fakes caught and real speech called FAKE at the service decision (per channel),
answers that are confidently wrong, and a reliability table (does 0.9 confidence mean 90 % right?).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.errors import AudioError
from ..audio.options import AudioOptions
from ..audio.windows import WindowSet, prepare
from ..scorer import Scorer
from ..scoring import FAKE, INCONCLUSIVE, Decision, Rule, decide, file_score
from .metrics import equal_error_rate

CONFIDENT = 0.9
BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


@dataclass(frozen=True)
class HeldOutFile:
    path: str
    label: str  # bonafide | spoof
    family: str
    channel: str


@dataclass(frozen=True)
class Cut:
    file: HeldOutFile
    windows: WindowSet


def cut(files: Sequence[HeldOutFile], options: AudioOptions | None = None) -> list[Cut]:
    """Decode and window every file as the service does; a file the service would refuse is left out."""
    options = options or AudioOptions()
    cuts = []
    for f in files:
        try:
            cuts.append(Cut(f, prepare(Path(f.path).read_bytes(), options)[1]))
        except AudioError:
            continue
    return cuts


def score(cuts: Sequence[Cut], scorer: Scorer, batch: int = 16) -> list[np.ndarray]:
    """Every window's margin, file by file, in batches across files."""
    if not cuts:
        return []
    flat = np.concatenate([c.windows.batch for c in cuts])
    margins = np.concatenate([scorer.scores(flat[i : i + batch]) for i in range(0, len(flat), batch)])
    bounds = np.cumsum([0, *(len(c.windows.spans) for c in cuts)])
    return [margins[a:b] for a, b in itertools.pairwise(bounds)]


def judge(cuts: Sequence[Cut], margins: Sequence[np.ndarray], rule: Rule) -> list[Decision]:
    return [
        decide(c.windows.spans, m, c.windows.silent, rule, c.windows.speech_s)
        for c, m in zip(cuts, margins, strict=True)
    ]


def file_margins(cuts: Sequence[Cut], margins: Sequence[np.ndarray], rule: Rule | None = None) -> np.ndarray:
    """The margin the file rule turns into the file's score: its most fake counted window's, or what
    ``rule``'s run length and ``local_margin`` make of its counted windows (in the margins' units)."""
    rule = rule or Rule()
    return np.array(
        [file_score(m[~np.asarray(c.windows.silent)], rule) for c, m in zip(cuts, margins, strict=True)]
    )


@dataclass(frozen=True)
class Summary:
    files: int
    eer: float
    fake_caught: float  # held-out fakes called FAKE, among judged fakes
    real_flagged: float  # real files called FAKE, among judged real files
    real_flagged_by_channel: dict[str, float]
    fake_caught_by_channel: dict[str, float]
    inconclusive: int
    confident_answers: int  # judged with confidence >= CONFIDENT
    confident_wrong: float  # wrong among those
    confidently_wrong_share: float  # wrong with confidence >= CONFIDENT, among all judged answers
    reliability: list[dict[str, float]]  # per confidence bin: answers, accuracy, mean confidence


def _rate(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def summarise(cuts: Sequence[Cut], decisions: Sequence[Decision]) -> Summary:
    judged = [(c.file, d) for c, d in zip(cuts, decisions, strict=True) if d.prediction != INCONCLUSIVE]
    real = [(f, d) for f, d in judged if f.label == "bonafide"]
    fake = [(f, d) for f, d in judged if f.label != "bonafide"]
    scores = {
        lab: np.array([d.score for f, d in judged if (f.label == "bonafide") == lab]) for lab in (True, False)
    }
    eer = equal_error_rate(scores[True], scores[False])[0] if len(real) and len(fake) else float("nan")
    wrong = [(d.prediction == FAKE) != (f.label != "bonafide") for f, d in judged]
    confidence = np.array([d.confidence for _, d in judged], dtype=np.float64)
    sure = confidence >= CONFIDENT
    bins = []
    for low, high in itertools.pairwise(BINS):
        inside = (confidence >= low) & ((confidence < high) | (high == 1.0))
        if inside.any():
            right = ~np.asarray(wrong)[inside]
            bins.append(
                {
                    "low": low,
                    "high": high,
                    "answers": int(inside.sum()),
                    "accuracy": float(right.mean()),
                    "mean_confidence": float(confidence[inside].mean()),
                }
            )
    channels = sorted({f.channel for f, _ in judged})
    return Summary(
        files=len(cuts),
        eer=float(eer),
        fake_caught=_rate([d.prediction == FAKE for _, d in fake]),
        real_flagged=_rate([d.prediction == FAKE for _, d in real]),
        real_flagged_by_channel={
            ch: _rate([d.prediction == FAKE for f, d in real if f.channel == ch])
            for ch in channels
            if any(f.channel == ch for f, _ in real)
        },
        fake_caught_by_channel={
            ch: _rate([d.prediction == FAKE for f, d in fake if f.channel == ch])
            for ch in channels
            if any(f.channel == ch for f, _ in fake)
        },
        inconclusive=len(cuts) - len(judged),
        confident_answers=int(sure.sum()),
        confident_wrong=_rate(np.asarray(wrong)[sure].tolist()),
        confidently_wrong_share=_rate((np.asarray(wrong) & sure).tolist()),
        reliability=bins,
    )
