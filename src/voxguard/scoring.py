"""From per-window scores to a file verdict: REAL or FAKE with a calibrated-looking probability.

Window score = logit[bona fide] - logit[spoof]. For one window ``sigmoid(-score)`` equals the
softmax spoof probability. A file's score is the mean over its non-silent windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, WINDOW, DecodedAudio, WindowSet


def fake_probability(score: float) -> float:
    """``sigmoid(-score)`` computed without overflow for large margins."""
    if score >= 0:
        z = math.exp(-score)
        return z / (1.0 + z)
    return 1.0 / (1.0 + math.exp(score))


@dataclass(frozen=True)
class Decision:
    score: float
    fake_probability: float
    is_fake: bool
    confidence: float

    @property
    def prediction(self) -> str:
        return "FAKE" if self.is_fake else "REAL"


def decide(scores: list[float], threshold: float = 0.5) -> Decision:
    """The verdict rule shared by files and live streams: mean score, sigmoid, threshold."""
    score = float(np.mean(scores))
    p_fake = fake_probability(score)
    is_fake = p_fake >= threshold
    return Decision(score, p_fake, is_fake, p_fake if is_fake else 1.0 - p_fake)


@dataclass(frozen=True)
class WindowScore:
    start_s: float
    end_s: float
    score: float
    fake_probability: float
    silent: bool


@dataclass(frozen=True)
class Verdict:
    prediction: str  # "REAL" | "FAKE"
    is_fake: bool
    confidence: float  # probability of the predicted class
    fake_probability: float
    score: float
    duration_s: float
    sample_rate: int
    windows: list[WindowScore]
    warnings: list[str]


def summarize(
    audio: DecodedAudio, windows: WindowSet, scores: np.ndarray, *, threshold: float = 0.5
) -> Verdict:
    """Combine window scores into the file verdict; silent windows are reported but not counted."""
    if len(scores) != len(windows.spans):
        raise ValueError(f"{len(scores)} scores for {len(windows.spans)} windows")
    per_window = [
        WindowScore(start, end, float(s), fake_probability(float(s)), silent)
        for (start, end), s, silent in zip(windows.spans, scores, windows.silent, strict=True)
    ]
    counted = [w.score for w in per_window if not w.silent]
    decision = decide(counted, threshold)
    score, p_fake, is_fake = decision.score, decision.fake_probability, decision.is_fake
    warnings: list[str] = []
    n_samples = audio.waveform.shape[0]
    if n_samples < WINDOW:
        warnings.append(
            f"audio is {n_samples / SAMPLE_RATE:.2f} s, shorter than the model's "
            f"{WINDOW / SAMPLE_RATE:.2f} s "
            "window: it was repeated to fill it, as in the reference evaluation"
        )
    silent = len(per_window) - len(counted)
    if silent:
        warnings.append(
            f"{silent} of {len(per_window)} windows were below the silence floor and left out of the verdict"
        )
    if audio.info.sample_rate < SAMPLE_RATE:
        warnings.append(
            f"audio was sampled at {audio.info.sample_rate} Hz: upsampled to 16 kHz, so the band above "
            f"{audio.info.sample_rate // 2} Hz is empty and scores are less reliable"
        )
    return Verdict(
        prediction=decision.prediction,
        is_fake=is_fake,
        confidence=decision.confidence,
        fake_probability=p_fake,
        score=score,
        duration_s=audio.info.duration_s,
        sample_rate=audio.info.sample_rate,
        windows=per_window,
        warnings=warnings,
    )
