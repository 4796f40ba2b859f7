"""A 16 kHz waveform -> the ``WINDOW``-sample rows the model scores, each levelled (or not) as the
options say; :func:`prepare` is the whole CPU side of a request, bytes to windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decoding import DecodedAudio, decode
from .errors import AudioError
from .options import DEFAULT_HOP, SAMPLE_RATE, WINDOW, AudioOptions
from .speech import RMS_FLOOR, frame_levels, speech_seconds


@dataclass(frozen=True)
class WindowSet:
    """Model input rows plus, per row, where it came from and how loud it was; ``speech_s`` is how much
    speech the audio holds (see :func:`voxguard.audio.speech.speech_span`), which decides whether a
    verdict is possible."""

    batch: np.ndarray
    spans: list[tuple[float, float]]
    silent: list[bool]
    rms_dbfs: list[float]
    speech_s: float


def window_starts(n_samples: int, window: int = WINDOW, hop: int = DEFAULT_HOP) -> list[int]:
    """Start sample of each window: every ``hop`` from 0, plus one ending exactly at the last sample.

    The extra tail window makes sure the end of the audio is always scored, without a duplicate when the
    hop grid already lands on it. Audio no longer than one window gets the single start 0.
    """
    if n_samples < 1 or window < 1 or hop < 1:
        raise ValueError(f"need positive n_samples, window and hop, got {n_samples}, {window}, {hop}")
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window != n_samples:
        starts.append(n_samples - window)
    return starts


def make_windows(
    waveform: np.ndarray,
    *,
    hop: int = DEFAULT_HOP,
    preprocess: str = "robust",
    target_rms_dbfs: float = -24.0,
    max_gain_db: float = 40.0,
    silence_floor_dbfs: float = -60.0,
) -> WindowSet:
    """Cut a 16 kHz mono waveform into ``WINDOW``-sample model inputs.

    Short audio is tiled end to end and cut to ``WINDOW`` exactly as the reference AASIST evaluation
    does; longer audio uses :func:`window_starts`.

    ``preprocess="reference"`` gives the raw samples, matching the published evaluation bit for bit.
    ``preprocess="robust"`` (default) scales each window to ``target_rms_dbfs`` because AASIST calls
    synthetic speech real once it is quietened by 20-30 dB, so level must not be an attack knob. The gain
    is capped at ``max_gain_db`` so near-silence is not blown up into noise; windows whose raw RMS is below
    ``silence_floor_dbfs`` are flagged ``silent`` and, if all are, ``no_speech`` is raised. Normalised
    samples are not clipped to [-1, 1]: the model input is linear and clipping would add distortion
    that the level change alone does not.
    """
    if waveform.ndim != 1 or waveform.shape[0] == 0:
        raise ValueError(f"need a non-empty 1-D waveform, got shape {waveform.shape}")
    if preprocess not in ("robust", "reference"):
        raise ValueError(f"preprocess must be 'robust' or 'reference', got {preprocess!r}")
    x = np.asarray(waveform, dtype=np.float32)
    n = x.shape[0]
    if n < WINDOW:
        raw = np.tile(x, WINDOW // n + 1)[:WINDOW][None, :]
        spans = [(0.0, n / SAMPLE_RATE)]
    else:
        starts = window_starts(n, WINDOW, hop)
        raw = np.stack([x[s : s + WINDOW] for s in starts])
        spans = [(s / SAMPLE_RATE, (s + WINDOW) / SAMPLE_RATE) for s in starts]

    batch, silent, level = _preprocess(raw, preprocess, target_rms_dbfs, max_gain_db, silence_floor_dbfs)
    if preprocess == "robust" and all(silent):
        raise AudioError(
            "no_speech",
            f"Every part of the audio is below {silence_floor_dbfs:g} dBFS RMS, so there is no speech to "
            "analyse. Accepted: audio with audible speech.",
        )
    return WindowSet(batch, spans, silent, level, speech_seconds(frame_levels(x)))


def level_windows(raw: np.ndarray, options: AudioOptions) -> tuple[np.ndarray, list[bool], list[float]]:
    """``options``' preprocessing of raw ``(B, WINDOW)`` rows: model input, silent flags, levels (dBFS)."""
    return _preprocess(
        raw, options.preprocess, options.target_rms_dbfs, options.max_gain_db, options.silence_floor_dbfs
    )


def _preprocess(
    raw: np.ndarray, preprocess: str, target_rms_dbfs: float, max_gain_db: float, silence_floor_dbfs: float
) -> tuple[np.ndarray, list[bool], list[float]]:
    """Per-window level normalisation (robust) or none (reference); see :func:`make_windows`.

    A BLAS dot product per row for the power and one float32 multiply for the gain: on a fast device
    this runs once per window of every request, so it is kept to a few microseconds."""
    power = np.array([np.dot(row, row) for row in raw], dtype=np.float64) / raw.shape[1]
    level = 10.0 * np.log10(np.maximum(power, RMS_FLOOR**2))
    if preprocess == "reference":
        return raw, [False] * len(raw), level.tolist()
    gain = (10.0 ** (np.minimum(target_rms_dbfs - level, max_gain_db) / 20.0)).astype(np.float32)
    return raw * gain[:, None], (level < silence_floor_dbfs).tolist(), level.tolist()


def windows_of(waveform: np.ndarray, options: AudioOptions) -> WindowSet:
    """:func:`make_windows` with ``options``' hop and levelling."""
    return make_windows(
        waveform,
        hop=options.hop,
        preprocess=options.preprocess,
        target_rms_dbfs=options.target_rms_dbfs,
        max_gain_db=options.max_gain_db,
        silence_floor_dbfs=options.silence_floor_dbfs,
    )


def prepare(data: bytes, options: AudioOptions) -> tuple[DecodedAudio, WindowSet]:
    """Bytes to model-ready windows: the whole CPU side of a request, in one call for a worker pool."""
    audio = decode(data, min_duration_s=options.min_duration_s, max_duration_s=options.max_duration_s)
    return audio, windows_of(audio.waveform, options)
