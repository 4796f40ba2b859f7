"""How much speech a waveform holds: the level of each 20 ms frame, and the span from the first to the
last run of speech frames (the "too short to judge" floor reads it).

A frame is loud enough for speech within ``SPEECH_RANGE_DB`` of the loudest frame and
``SPEECH_ABOVE_NOISE_DB`` above the noise (the 10th percentile of the frame levels; in audio that is all
speech that percentile is speech too, so the cut never rises above ``SPEECH_NOISE_CAP_DB`` below the
loudest), and only runs of ``SPEECH_MIN_FRAMES`` such frames count, so a click or a noise burst is not
speech. On the shared recordings this measures most transcodes within 0.05 s of their original
(docs/evaluation.md).
"""

from __future__ import annotations

import numpy as np

from .options import SAMPLE_RATE

SPEECH_FRAME = 320
# Only digital silence is ruled out absolutely: speech turned down 30 dB (the level attack) still counts.
SPEECH_FLOOR_DBFS = -90.0
SPEECH_RANGE_DB = 30.0
SPEECH_ABOVE_NOISE_DB = 10.0
SPEECH_NOISE_CAP_DB = 20.0
SPEECH_MIN_FRAMES = 3
# Digital silence has RMS 0; flooring it at -200 dBFS keeps its level a finite (JSON-safe) number.
RMS_FLOOR = 1e-10


def frame_levels(x: np.ndarray) -> np.ndarray:
    """Mean-square level of each 20 ms frame in dBFS (a last partial frame counts as a frame).

    Float32 sums of squares (a view, no copy): a per-request cost, and levels need no more precision."""
    x = np.asarray(x, dtype=np.float32)
    whole = len(x) // SPEECH_FRAME
    frames = x[: whole * SPEECH_FRAME].reshape(whole, SPEECH_FRAME)
    power = np.einsum("ij,ij->i", frames, frames)
    if len(x) > whole * SPEECH_FRAME:
        tail = x[whole * SPEECH_FRAME :]
        power = np.append(power, np.dot(tail, tail))
    return 10.0 * np.log10(np.maximum(power / SPEECH_FRAME, RMS_FLOOR**2))


def speech_seconds(levels: np.ndarray) -> float:
    """Seconds from the first to the last speech frame (see ``SPEECH_FRAME``). Pauses between words count;
    leading and trailing silence or room noise does not, so a clip's length is not mistaken for how
    much speech the model can hear."""
    start, end = speech_frames(levels)
    return (end - start) * SPEECH_FRAME / SAMPLE_RATE


def speech_frames(levels: np.ndarray) -> tuple[int, int]:
    """``[start, end)`` frame indices of the speech in ``levels`` (``(0, 0)`` when there is none)."""
    if not len(levels):
        return 0, 0
    loudest = float(levels.max())
    tenth = (len(levels) - 1) // 10  # the 10th percentile's rank (np.percentile costs 50x more per call)
    noise = float(np.partition(levels, tenth)[tenth])
    cut = max(
        SPEECH_FLOOR_DBFS,
        loudest - SPEECH_RANGE_DB,
        min(noise + SPEECH_ABOVE_NOISE_DB, loudest - SPEECH_NOISE_CAP_DB),
    )
    loud = np.concatenate([[False], levels >= cut, [False]])
    edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= SPEECH_MIN_FRAMES]
    return (int(runs[0][0]), int(runs[-1][1])) if runs else (0, 0)


def speech_span(x: np.ndarray) -> tuple[int, int]:
    """``[start, end)`` sample indices of the speech in ``x`` (see :func:`speech_seconds`)."""
    start, end = speech_frames(frame_levels(x))
    return start * SPEECH_FRAME, min(len(x), end * SPEECH_FRAME)
