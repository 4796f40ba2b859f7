"""Where a synthetic segment starts and ends, to better than the 2 s window hop.

A 4.04 s window is called fake once it holds about 0.5-2.4 s of synthetic speech (it varies by voice),
and the grid's windows start every 2 s, so the span of the flagged windows overshoots a synthetic stretch
by up to 3 s on each side, and a window that holds mostly synthetic speech is sometimes called real.
Half windows scored by the detector could not fix that: they do not flip where the synthetic speech
starts (docs/evaluation.md, "Segment edges"). So the edges come from the segment localizer
(:mod:`voxguard.model.localizer`), which says for every 20 ms frame whether it is synthetic speech.

For each segment of the detector's verdict, the frames are read from the start of the window before it
(called real, yet it may hold synthetic speech) to the end of the window after it. Runs of frames past
a threshold (probabilities smoothed first) that last long enough, joined across short gaps, become the
segments, each with the fake probability of the segment it came from (:class:`Placement` holds the
numbers; the localizer's recipe picks them on its dev examples and ships them with its weights). A
segment in which the localizer hears no synthetic speech is dropped when another of the file's segments
has some (a false alarm of the detector on real speech); when it hears none in any, the detector's
segments stay as they are, so a FAKE file always keeps a segment. The file's verdict, its probability
and its windows are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .scoring import Segment, Verdict


@dataclass(frozen=True)
class Placement:
    """Frames smoothed over ``smooth_s`` count as synthetic above ``threshold``; runs shorter than
    ``min_run_s`` are ignored and runs closer than ``join_gap_s`` joined."""

    threshold: float
    smooth_s: float
    min_run_s: float
    join_gap_s: float


def runs(fake_frames: np.ndarray, frame_s: float, placement: Placement) -> list[tuple[int, int]]:
    """The synthetic runs of a stretch of frames, as ``(first, end)`` frame indices."""
    width = max(1, round(placement.smooth_s / frame_s))
    smooth = np.convolve(np.asarray(fake_frames, dtype=np.float64), np.ones(width) / width, mode="same")
    flagged = np.concatenate([[False], smooth > placement.threshold, [False]])
    changes = np.flatnonzero(np.diff(flagged.astype(np.int8)))
    joined: list[tuple[int, int]] = []
    for a, b in zip(changes[::2].tolist(), changes[1::2].tolist(), strict=True):
        if (b - a) * frame_s < placement.min_run_s:
            continue
        if joined and (a - joined[-1][1]) * frame_s < placement.join_gap_s:
            joined[-1] = (joined[-1][0], b)
        else:
            joined.append((a, b))
    return joined


def placed(verdict: Verdict, fake_frames: np.ndarray, frame_s: float, placement: Placement) -> Verdict:
    """``verdict`` with its segments moved to where ``fake_frames`` (each frame's synthetic probability,
    frame ``i`` starting at ``i * frame_s``) finds the synthetic speech; nothing else changes."""
    segments = verdict.decision.segments
    if not segments:
        return verdict
    spans = [(w.start_s, w.end_s) for w in verdict.windows]
    found = []
    for segment in segments:
        lo, hi = _search_range(segment, spans)
        first, last = round(lo / frame_s), min(int(np.ceil(hi / frame_s)), len(fake_frames))
        found.append(
            [
                Segment(
                    round(float((first + a) * frame_s), 2),
                    round(float(min((first + b) * frame_s, verdict.duration_s)), 2),
                    segment.fake_probability,
                )
                for a, b in runs(fake_frames[first:last], frame_s, placement)
            ]
        )
    if not any(found):
        return verdict
    moved = _merged([segment for run in found for segment in run])
    return replace(verdict, decision=replace(verdict.decision, segments=moved))


def _search_range(segment: Segment, spans: list[tuple[float, float]]) -> tuple[float, float]:
    """From the start of the window before the segment to the end of the window after it."""
    lo = max((s for s, _ in spans if s < segment.start_s), default=segment.start_s)
    hi = min((e for _, e in spans if e > segment.end_s), default=segment.end_s)
    return lo, hi


def _merged(segments: list[Segment]) -> list[Segment]:
    """Segments that overlap become one, with the higher fake probability."""
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
