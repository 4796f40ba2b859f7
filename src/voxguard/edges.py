"""Where a synthetic segment starts and ends, to better than the 2 s window hop.

A 4.04 s window is called fake once it holds about 0.5-2.4 s of synthetic speech (it varies by voice),
and the grid's windows start every 2 s, so the span of the flagged windows overshoots a synthetic stretch
by up to 3 s on each side, and a window that holds mostly synthetic speech is sometimes called real; no
fixed shift fixes both. After the normal pass, each segment edge is searched by bisection with *half
windows*: 2.02 s of audio repeated twice to the model's 64,600 samples, as the short-audio rule repeats
a clip. A half window centred on a point says whether the speech there is synthetic. Half windows of
real speech score nearer the boundary than whole ones, so a probe counts as synthetic only when its
score is at least ``STRICTNESS`` of the way from the rule's boundary to the segment's own most
synthetic window; one past the boundary but not that far straddles the edge. Two rounds narrow an edge
from 5.5 s to 1.4 s (docs/evaluation.md, "Segment edges"). Each round's half windows of every edge go
through the caller's scorer as one batch, so a segment costs four extra windows, not a second pass; the
file's verdict, its fake probability and its windows are not changed, only where its segments lie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .audio.options import SAMPLE_RATE, WINDOW, AudioOptions
from .audio.windows import level_windows
from .scoring import Rule, Segment, Verdict, WindowScore

HALF = WINDOW // 2  # samples in a half window, repeated twice to fill the model input
ROUNDS = 2
# How far past the first flagged window's start (before the last one's end) the synthetic speech may
# begin (end): a window is called fake with as little as 0.5-1.3 s of it (measured).
INSIDE_S = 3.5
# Where between the rule's boundary (0) and the segment's most synthetic window (1) a probe's score
# must lie to count as synthetic.
STRICTNESS = 0.5


@dataclass
class _Edge:
    """A bisection for one edge: synthetic speech lies after it (``rising``, a segment start) or before
    it (a segment end), and the edge is somewhere in ``[lo, hi]``. ``straddled``: the probe that set
    the bound on the real side was past the rule's boundary without counting as synthetic, so its half
    window holds the edge."""

    lo: float
    hi: float
    rising: bool
    straddled: bool = False

    @property
    def probe(self) -> float:
        return (self.lo + self.hi) / 2

    def update(self, fake: bool, partly: bool) -> None:
        x = self.probe
        if fake == self.rising:
            self.hi = x
        else:
            self.lo = x
        if not fake:
            self.straddled = partly

    def place(self, duration_s: float) -> float:
        """The file's start (end) when the range reached it and no probe heard real speech there; the
        straddling probe's centre; otherwise the middle of the range."""
        outer = self.lo if self.rising else self.hi
        if outer in (0.0, duration_s):
            return outer
        return round(outer if self.straddled else self.probe, 2)


def _edges(segment: Segment, spans: list[tuple[float, float]], duration_s: float) -> tuple[_Edge, _Edge]:
    """The search ranges of a segment's start and end: from the neighbouring window (called real, yet it
    may hold synthetic speech) to ``INSIDE_S`` inside the segment."""
    before = max((s for s, _ in spans if s < segment.start_s), default=segment.start_s)
    after = min((e for _, e in spans if e > segment.end_s), default=segment.end_s)
    start = _Edge(before, min(segment.start_s + INSIDE_S, segment.end_s), rising=True)
    end = _Edge(max(segment.end_s - INSIDE_S, segment.start_s), min(after, duration_s), rising=False)
    return start, end


def half_windows(
    waveform: np.ndarray, centres_s: list[float], options: AudioOptions
) -> tuple[np.ndarray, list[bool]]:
    """Model inputs of the 2.02 s of audio centred on each time (kept inside the audio), each repeated
    to ``WINDOW`` samples and levelled as the normal windows are; and whether each is silent."""
    last = max(0, len(waveform) - HALF)
    starts = [min(max(round(c * SAMPLE_RATE) - HALF // 2, 0), last) for c in centres_s]
    raw = np.stack([np.tile(waveform[s : s + HALF], 2)[:WINDOW] for s in starts])
    batch, silent, _ = level_windows(raw, options)
    return batch, silent


class EdgeSearch:
    """The bisection of every segment edge of one file's verdict: take :meth:`probes`, score them with
    the same model as the file's windows, :meth:`feed` their margins back, until :meth:`probes` is None;
    then :meth:`refined` is the verdict with the segments' edges moved."""

    def __init__(self, waveform: np.ndarray, verdict: Verdict, rule: Rule, options: AudioOptions) -> None:
        self.waveform = waveform
        self.rule = rule
        self.options = options
        self.segments = verdict.decision.segments
        self.duration_s = len(waveform) / SAMPLE_RATE
        spans = [(w.start_s, w.end_s) for w in verdict.windows]
        # A file of one window has no neighbour to search from: its segment is the whole file.
        self.edges = [] if len(spans) < 2 else [_edges(s, spans, self.duration_s) for s in self.segments]
        self.boundary = _boundary(rule.threshold)
        self.cuts = [_cut(s, verdict.windows, self.boundary) for s in self.segments]
        self.rounds_left = ROUNDS if self.edges else 0
        self._probing: list[tuple[_Edge, float]] = []

    def probes(self) -> np.ndarray | None:
        """This round's half windows, ``(B, WINDOW)``, or None when the search is over."""
        if not self.rounds_left:
            return None
        self._probing = [
            (edge, cut) for pair, cut in zip(self.edges, self.cuts, strict=True) for edge in pair
        ]
        batch, self._silent = half_windows(self.waveform, [e.probe for e, _ in self._probing], self.options)
        return batch

    @property
    def centres(self) -> list[float]:
        """Where in the audio (seconds) the last :meth:`probes` are centred, in order."""
        return [edge.probe for edge, _ in self._probing]

    def feed(self, margins: np.ndarray) -> None:
        """The model's margins for the last :meth:`probes`, in order."""
        if len(margins) != len(self._probing):
            raise ValueError(f"{len(margins)} scores for {len(self._probing)} probes")
        scores = self.rule.calibrate(margins)
        for (edge, cut), score, silent in zip(self._probing, scores, self._silent, strict=True):
            edge.update(not silent and score <= cut, not silent and score <= self.boundary)
        self.rounds_left -= 1

    def refined(self, verdict: Verdict) -> Verdict:
        """``verdict`` with its segments' edges moved (see :func:`_moved`); nothing else changes."""
        if not self.edges:
            return verdict
        moved = [
            _moved(segment, start, end, self.duration_s)
            for segment, (start, end) in zip(self.segments, self.edges, strict=True)
        ]
        return replace(verdict, decision=replace(verdict.decision, segments=_merged(moved)))


def _boundary(threshold: float) -> float:
    """The score whose fake probability is ``threshold``: the rule's decision boundary."""
    t = min(max(threshold, 1e-12), 1.0 - 1e-12)
    return math.log((1.0 - t) / t)


def _cut(segment: Segment, windows: list[WindowScore], boundary: float) -> float:
    """The score at or below which a probe counts as synthetic for ``segment``: ``STRICTNESS`` of the way
    from the rule's boundary to the segment's most synthetic window."""
    inside = [
        w.score for w in windows if not w.silent and segment.start_s <= w.start_s and w.end_s <= segment.end_s
    ]
    return boundary + STRICTNESS * (min(inside, default=boundary) - boundary)


def _moved(segment: Segment, start: _Edge, end: _Edge, duration_s: float) -> Segment:
    a, b = start.place(duration_s), end.place(duration_s)
    return replace(segment, start_s=a, end_s=b) if a < b else segment


def _merged(segments: list[Segment]) -> list[Segment]:
    """Segments whose moved edges overlap become one, with the higher fake probability."""
    out: list[Segment] = []
    for s in sorted(segments, key=lambda s: s.start_s):
        if out and s.start_s <= out[-1].end_s:
            last = out[-1]
            out[-1] = Segment(
                last.start_s, max(last.end_s, s.end_s), max(last.fake_probability, s.fake_probability)
            )
        else:
            out.append(s)
    return out
