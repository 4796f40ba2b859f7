"""From per-window scores to a file verdict: REAL, FAKE (with where), or INCONCLUSIVE (too little speech).

A window's model output is ``logit[bona fide] - logit[spoof]``. AASIST's softmax is far more sure of
"spoof" on speech unlike its training data (phone lines, unfamiliar microphones, short cuts) than on
the synthetic speech it knows, so the rule first adds a measured ``offset`` to every window's margin,
then multiplies it by the model's measured ``scale``: the window **score** (positive means human, 0 is
the decision boundary) and its **fake probability** ``sigmoid(-score)`` are reported after that. The
offset places the boundary; the scale only says how sure the model may be there (fitted on held-out
speech, so that a 0.9 means about 9 in 10 right) and never moves a verdict at threshold 0.5. With
``offset`` 0 and ``scale`` 1 they are the network's own.

The file rule (measured in docs/evaluation.md) looks for synthetic speech anywhere, not on average: a
**segment** is a run of at least ``min_windows`` consecutive counted (non-silent) windows whose fake
probability is each at or above ``threshold``; the file is FAKE when it has a segment. A mean over the
windows would let real speech around a synthetic stretch outvote it.

The file's fake probability is the probability at which that rule flips: the highest value ``q`` such that
``min_windows`` consecutive windows all reach ``q`` (the best run's weakest window; with one window, the
most fake window). So FAKE is exactly ``fake_probability >= threshold``, and ``score`` is the same number
in logit form. Audio with less speech than ``min_reliable_s`` gets no verdict at all.

A model may also have a ``local_margin`` ``d`` (its checkpoint records it): the file's score is then the
lower of its counted windows' mean score and its best run's score plus ``d``. A long real recording
has many windows, each a chance for one to look synthetic; with ``d`` one window must be that much
more synthetic to make the file FAKE on its own, while a file synthetic throughout is FAKE on its
average. Its segments are still the runs of windows at the threshold, found only in a FAKE file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from .audio.decoding import DecodedAudio
from .audio.options import SAMPLE_RATE, WINDOW
from .audio.windows import WindowSet

REAL, FAKE, INCONCLUSIVE = "REAL", "FAKE", "INCONCLUSIVE"
# The end of the warning for audio shorter than a window; the CLI table shows it as a column instead.
REPEATED = "its speech was repeated to fill the window"


def fake_probability(score: float) -> float:
    """``sigmoid(-score)`` computed without overflow for large margins."""
    if score >= 0:
        z = math.exp(-score)
        return z / (1.0 + z)
    return 1.0 / (1.0 + math.exp(score))


@dataclass(frozen=True)
class Rule:
    """When windows add up to a FAKE file. ``Rule()`` is the network's own output with no speech floor;
    the service's measured values come from ``Settings.rule`` (docs/evaluation.md)."""

    threshold: float = 0.5
    min_windows: int = 1
    min_reliable_s: float = 0.0
    offset: float = 0.0
    scale: float = 1.0
    local_margin: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.min_windows < 1:
            raise ValueError(f"min_windows must be at least 1, got {self.min_windows}")
        if self.min_reliable_s < 0:
            raise ValueError(f"min_reliable_s must not be negative, got {self.min_reliable_s}")
        if not math.isfinite(self.offset):
            raise ValueError(f"offset must be a finite number, got {self.offset}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive number, got {self.scale}")
        local = self.local_margin
        if local is not None and not (math.isfinite(local) and local >= 0):
            raise ValueError(f"local_margin must be a number of at least 0, got {self.local_margin}")

    def calibrate(self, margins: np.ndarray) -> np.ndarray:
        """Model margins (``logit[bona fide] - logit[spoof]``) -> the window scores every report uses."""
        return (np.asarray(margins, dtype=np.float64) + self.offset) * self.scale

    def is_fake(self, probability: float) -> bool:
        """The rule's one comparison: a window (or a file's best run) this likely to be synthetic is fake."""
        return probability >= self.threshold

    def window_scores(
        self, spans: list[tuple[float, float]], margins: np.ndarray, silent: list[bool]
    ) -> list[WindowScore]:
        """Each window's score and fake probability, its margin calibrated once: what an upload reports
        in ``windows`` and a live stream sends window by window."""
        return [
            WindowScore(start, end, float(s), fake_probability(float(s)), quiet)
            for (start, end), s, quiet in zip(spans, self.calibrate(margins), silent, strict=True)
        ]


class ModelRuleDefaults(Protocol):
    """What a loaded model says about its own rule (``inference.ModelInfo``, ``LoadedCheckpoint``)."""

    @property
    def score_offset(self) -> float: ...
    @property
    def score_scale(self) -> float: ...
    @property
    def local_margin(self) -> float | None: ...


@dataclass(frozen=True)
class RuleOptions:
    """The verdict rule as configured (``Settings.rule``). Each model has its own score offset, scale and
    local margin, so the :class:`Rule` a model's windows are judged by is :meth:`for_loaded`'s."""

    threshold: float
    min_windows: int
    min_reliable_s: float
    offset: float | None  # every model's offset; None: each model's own
    scale: float | None = None  # every model's scale; None: each model's own

    def for_model(self, model_offset: float, model_scale: float, local_margin: float | None = None) -> Rule:
        """The rule for a model whose own offset and scale are ``model_offset`` and ``model_scale``
        (``ModelInfo.score_offset`` and ``.score_scale``). Both are required: an offset alone would
        borrow another model's scale. ``local_margin`` is the model's own (``ModelInfo.local_margin``)."""
        offset = model_offset if self.offset is None else self.offset
        scale = model_scale if self.scale is None else self.scale
        return Rule(self.threshold, self.min_windows, self.min_reliable_s, offset, scale, local_margin)

    def for_loaded(self, model: ModelRuleDefaults) -> Rule:
        """The rule for a loaded model, from all it says about its own rule (so none is left out)."""
        return self.for_model(model.score_offset, model.score_scale, model.local_margin)


@dataclass(frozen=True)
class Segment:
    """A stretch judged synthetic: where it is in the audio and how strongly the model says so."""

    start_s: float
    end_s: float
    fake_probability: float


def describe_segment(segment: dict[str, float]) -> str:
    """A segment in words, as the CLI and the web page say it."""
    return (
        f"synthetic speech from {segment['start_s']:.1f} s to {segment['end_s']:.1f} s "
        f"(fake probability {segment['fake_probability']:.3f})"
    )


@dataclass(frozen=True)
class Decision:
    """The file-level outcome of :func:`decide`; ``is_fake`` and ``confidence`` are None when inconclusive."""

    prediction: str
    score: float
    fake_probability: float
    segments: list[Segment]
    reason: str | None = None
    leaning: str | None = None  # INCONCLUSIVE only: the side the unreliable probability falls on

    @property
    def is_fake(self) -> bool | None:
        return None if self.prediction == INCONCLUSIVE else self.prediction == FAKE

    @property
    def confidence(self) -> float | None:
        """The probability of the predicted class."""
        if self.prediction == INCONCLUSIVE:
            return None
        return self.fake_probability if self.prediction == FAKE else 1.0 - self.fake_probability

    def record(self) -> dict[str, Any]:
        """The verdict fields. An inconclusive outcome publishes no verdict probability, so none can be
        misread as one; which way the model leaned goes in fields of their own, null when judged."""
        judged = self.prediction != INCONCLUSIVE
        return {
            "prediction": self.prediction,
            "is_fake": self.is_fake,
            "confidence": self.confidence,
            "fake_probability": self.fake_probability if judged else None,
            "score": self.score if judged else None,
            "reason": self.reason,
            "leaning": self.leaning,
            "leaning_fake_probability": None if self.leaning is None else self.fake_probability,
            "segments": [asdict(s) for s in self.segments],
        }


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of consecutive True values."""
    runs, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


def sustained_score(scores: np.ndarray, length: int) -> float:
    """The lowest, over every ``length`` consecutive scores, of their highest: in probability terms the
    best run's weakest window. ``length`` 1 is the minimum score; ``length`` past the end is the maximum."""
    s = np.asarray(scores, dtype=np.float64)
    k = min(length, len(s))
    highest = np.lib.stride_tricks.sliding_window_view(s, k).max(axis=1)
    return float(highest.min())


def file_score(scores: np.ndarray, rule: Rule) -> float:
    """A file's score from its counted windows' scores: its best run's, or with ``rule.local_margin``
    the lower of their mean and the best run's plus that margin (see the module's docstring)."""
    run = sustained_score(scores, rule.min_windows)
    if rule.local_margin is None:
        return run
    return min(float(np.mean(scores)), run + rule.local_margin)


def find_segments(
    spans: list[tuple[float, float]], margins: np.ndarray, silent: list[bool], rule: Rule
) -> list[Segment]:
    """The runs of counted windows that make a file FAKE under ``rule``, with their time spans.

    Silent windows are skipped (a pause does not break a run). A file with fewer counted windows than
    ``rule.min_windows`` needs all of them to qualify. A segment spans its windows from the first one's
    start to the last one's end, so it holds the synthetic speech found plus up to 3 s of real speech on
    either side; callers that publish segments move their edges with :mod:`voxguard.edges`.
    """
    counted = [i for i, s in enumerate(silent) if not s]
    if not counted:
        return []
    s = rule.calibrate(margins)[counted]
    flagged = [rule.is_fake(fake_probability(float(v))) for v in s]
    need = min(rule.min_windows, len(counted))
    segments = []
    for a, b in _runs(flagged):
        if b - a < need:
            continue
        start, end = spans[counted[a]][0], spans[counted[b - 1]][1]
        segments.append(Segment(start, end, fake_probability(sustained_score(s[a:b], need))))
    return segments


def decide(
    spans: list[tuple[float, float]],
    margins: np.ndarray,
    silent: list[bool],
    rule: Rule,
    speech_s: float | None = None,
) -> Decision:
    """The verdict rule shared by uploads, live streams, the CLI and ``voxguard eval``.

    ``margins`` are the model's per-window outputs. ``speech_s`` (seconds of speech in the audio) below
    ``rule.min_reliable_s`` makes the outcome INCONCLUSIVE; the score and probability are still
    computed, for evaluation and logs, and give the side it leans to (not a verdict: the model is not
    reliable on so little speech).
    """
    scores = rule.calibrate(margins)
    counted = np.asarray([v for v, s in zip(scores, silent, strict=True) if not s], dtype=np.float64)
    if not len(counted):
        raise ValueError("no counted window: every window is silent")
    score = file_score(counted, rule)
    p_fake = fake_probability(score)
    if speech_s is not None and speech_s < rule.min_reliable_s:
        heard = math.floor(speech_s * 10) / 10  # rounded down: 1.98 s must not read as the 2 s it lacks
        reason = f"too short to judge: {heard:.1f} s of speech, at least {rule.min_reliable_s:g} s needed"
        leaning = FAKE if rule.is_fake(p_fake) else REAL
        return Decision(INCONCLUSIVE, score, p_fake, [], reason, leaning)
    fake = rule.is_fake(p_fake)
    segments = find_segments(spans, margins, silent, rule) if fake else []
    return Decision(FAKE if fake else REAL, score, p_fake, segments)


@dataclass(frozen=True)
class WindowScore:
    start_s: float
    end_s: float
    score: float
    fake_probability: float
    silent: bool


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    duration_s: float
    speech_s: float
    sample_rate: int
    windows: list[WindowScore]
    warnings: list[str]

    @property
    def prediction(self) -> str:
        return self.decision.prediction

    def record(self, model: str) -> dict[str, Any]:
        """The result as the API and the CLI's ``--json`` publish it (one place decides the shape)."""
        return {
            **self.decision.record(),
            "model": model,
            "duration_s": self.duration_s,
            "speech_s": round(self.speech_s, 3),
            "sample_rate": self.sample_rate,
            "windows": [
                {
                    "start_s": w.start_s,
                    "end_s": w.end_s,
                    "score": w.score,
                    "fake_probability": w.fake_probability,
                }
                for w in self.windows
            ],
            "warnings": self.warnings,
        }


def summarize(audio: DecodedAudio, windows: WindowSet, margins: np.ndarray, rule: Rule = Rule()) -> Verdict:
    """Combine the model's window margins into the file verdict; silent windows are reported, not counted."""
    if len(margins) != len(windows.spans):
        raise ValueError(f"{len(margins)} scores for {len(windows.spans)} windows")
    per_window = rule.window_scores(windows.spans, margins, windows.silent)
    decision = decide(windows.spans, margins, windows.silent, rule, windows.speech_s)
    warnings: list[str] = []
    n_samples = audio.waveform.shape[0]
    if n_samples < WINDOW and decision.prediction != INCONCLUSIVE:
        warnings.append(
            f"audio is {n_samples / SAMPLE_RATE:.2f} s, shorter than the model's "
            f"{WINDOW / SAMPLE_RATE:.2f} s window: {REPEATED}"
        )
    silent = sum(w.silent for w in per_window)
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
        decision=decision,
        duration_s=audio.info.duration_s,
        speech_s=windows.speech_s,
        sample_rate=audio.info.sample_rate,
        windows=per_window,
        warnings=warnings,
    )
