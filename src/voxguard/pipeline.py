"""The prediction pipeline: bytes -> windows -> scores -> verdict, one path for every caller.

The service, ``voxguard predict``, ``voxguard eval`` (its service protocol) and ``bench agreement``
cut and level audio with :meth:`Pipeline.windows` and judge scored windows with
:meth:`Pipeline.verdict` (or :meth:`Pipeline.decision`, for callers that keep no decoded audio).
Only the scoring in between is the caller's: the service's engine batches windows across requests,
eval across files, and the CLI calls a detector. So one file gets one answer wherever it is sent; a
live stream (``serving.service.LiveSession``) judges its windows by the same pipeline's rule.
Callers that publish segments then place their edges with :meth:`Pipeline.refined` (the segment
localizer on the CPU, :mod:`voxguard.edges`): no second pass of the detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import edges
from .audio.decoding import DecodedAudio
from .audio.options import AudioOptions
from .audio.windows import WindowSet, prepare
from .scorer import Scorer
from .scoring import Decision, Rule, Verdict, decide, summarize

if TYPE_CHECKING:
    from .model.localizer import Localizer


@dataclass(frozen=True)
class Pipeline:
    """How audio is cut (``Settings.audio``) and judged: one model's rule
    (``Settings.rule.for_loaded(ModelInfo)``); with a ``localizer``, where segments start and end.
    Without one (eval, benchmarks: they publish no segments) segments are the grid's windows."""

    options: AudioOptions
    rule: Rule
    localizer: Localizer | None = None

    def windows(self, data: bytes) -> tuple[DecodedAudio, WindowSet]:
        """Decode, resample, cut and level: the whole CPU side of one file."""
        return prepare(data, self.options)

    def verdict(self, audio: DecodedAudio, windows: WindowSet, margins: np.ndarray) -> Verdict:
        """The file's result, from its windows' margins (``Verdict.record`` is its published shape)."""
        return summarize(audio, windows, margins, self.rule)

    def refined(self, audio: DecodedAudio, verdict: Verdict) -> Verdict:
        """``verdict`` with its segments' edges where the localizer hears the synthetic speech begin and end
        (a REAL file, or no localizer: ``verdict`` itself). CPU work, under 1 % of the detector's time on
        a CPU (docs/evaluation.md); callers on an event loop run it in their pool."""
        if self.localizer is None or not verdict.decision.segments:
            return verdict
        frames = self.localizer.fake_frames(audio.waveform)
        return edges.placed(
            verdict, frames, self.localizer.frame_s, edges.Placement(**self.localizer.placement)
        )

    def decision(self, windows: WindowSet, margins: np.ndarray) -> Decision:
        """The verdict alone, as :meth:`verdict` decides it."""
        return decide(windows.spans, margins, windows.silent, self.rule, windows.speech_s)

    def run(self, data: bytes, scorer: Scorer, batch_size: int) -> Verdict:
        """One file end to end, its windows scored ``batch_size`` at a time, its segments placed."""
        audio, windows = self.windows(data)
        return self.refined(audio, self.verdict(audio, windows, _scores(scorer, windows.batch, batch_size)))


def _scores(scorer: Scorer, batch: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [scorer.scores(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)]
    )
