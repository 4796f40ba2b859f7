"""The prediction pipeline: bytes -> windows -> scores -> verdict, one path for every caller.

The service, ``voxguard predict``, ``voxguard eval`` (its service protocol) and ``bench agreement``
cut and level audio with :meth:`Pipeline.windows` and judge scored windows with
:meth:`Pipeline.verdict` (or :meth:`Pipeline.decision`, for callers that keep no decoded audio).
Only the scoring in between is the caller's: the service's engine batches windows across requests,
eval across files, and the CLI calls a detector. So one file gets one answer wherever it is sent; a
live stream (``serving.service.LiveSession``) judges its windows by the same pipeline's rule.
Callers that publish segments then score the few half windows of :meth:`Pipeline.edge_search` the same
way, to place the segments' edges (:mod:`voxguard.edges`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio.decoding import DecodedAudio
from .audio.options import AudioOptions
from .audio.windows import WindowSet, prepare
from .edges import EdgeSearch
from .scorer import Scorer
from .scoring import Decision, Rule, Verdict, decide, summarize


@dataclass(frozen=True)
class Pipeline:
    """How audio is cut (``Settings.audio``) and judged: one model's rule
    (``Settings.rule.for_loaded(ModelInfo)``)."""

    options: AudioOptions
    rule: Rule

    def windows(self, data: bytes) -> tuple[DecodedAudio, WindowSet]:
        """Decode, resample, cut and level: the whole CPU side of one file."""
        return prepare(data, self.options)

    def verdict(self, audio: DecodedAudio, windows: WindowSet, margins: np.ndarray) -> Verdict:
        """The file's result, from its windows' margins (``Verdict.record`` is its published shape)."""
        return summarize(audio, windows, margins, self.rule)

    def edge_search(self, audio: DecodedAudio, verdict: Verdict) -> EdgeSearch:
        """The search that moves ``verdict``'s segment edges to where the synthetic speech begins and ends."""
        return EdgeSearch(audio.waveform, verdict, self.rule, self.options)

    def decision(self, windows: WindowSet, margins: np.ndarray) -> Decision:
        """The verdict alone, as :meth:`verdict` decides it."""
        return decide(windows.spans, margins, windows.silent, self.rule, windows.speech_s)

    def run(self, data: bytes, scorer: Scorer, batch_size: int) -> Verdict:
        """One file end to end, its windows (then its edge probes) scored ``batch_size`` at a time."""
        audio, windows = self.windows(data)
        verdict = self.verdict(audio, windows, _scores(scorer, windows.batch, batch_size))
        search = self.edge_search(audio, verdict)
        while (probes := search.probes()) is not None:
            search.feed(_scores(scorer, probes, batch_size))
        return search.refined(verdict)


def _scores(scorer: Scorer, batch: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [scorer.scores(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)]
    )
