"""A stand-in detector with exact geometry: its "synthetic speech" is a tone at the Nyquist frequency, and
a window is called fake once that tone fills ``NEEDS`` of it, as AASIST calls a 4 s window fake once it
holds about 0.5-2.4 s of synthetic speech; like AASIST's, its score is steep around there and saturates.
Tests of the verdict rule and the stream use it where real speech would make the windows' calls uncertain.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from voxguard.audio.options import SAMPLE_RATE
from voxguard.audio.speech import SPEECH_FRAME

NEEDS = 0.45  # share of a window the tone must fill for it to be called fake
OFFSET = 6.0  # the pipeline's score offset (RuleOptions.for_model's default)


class ToneModel:
    """Margins from the share of 20 ms frames that are the Nyquist tone (lag-1 correlation near -1)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def scores(self, windows: np.ndarray) -> np.ndarray:
        self.calls.append(len(windows))
        frames = windows[:, : windows.shape[1] // SPEECH_FRAME * SPEECH_FRAME].reshape(
            len(windows), -1, SPEECH_FRAME
        )
        lag = (frames[..., 1:] * frames[..., :-1]).mean(-1) / np.maximum((frames**2).mean(-1), 1e-12)
        share = (lag < -0.5).mean(-1)
        return (np.clip(60.0 * (NEEDS - share), -10.0, 10.0) - OFFSET).astype(np.float32)


class ToneDetector:
    """A real detector's metadata with :class:`ToneModel`'s scores."""

    def __init__(self, detector) -> None:
        self._detector = detector
        self.scores = ToneModel().scores

    def __getattr__(self, name: str):
        return getattr(self._detector, name)


def tone_spliced(seconds: float, fake_s: tuple[float, float], seed: int = 0) -> bytes:
    """``seconds`` of noise (the "real speech") with the tone from ``fake_s[0]`` to ``fake_s[1]``."""
    rng = np.random.default_rng(seed)
    wave = rng.normal(0.0, 0.1, round(seconds * SAMPLE_RATE)).astype(np.float32)
    a, b = (round(t * SAMPLE_RATE) for t in fake_s)
    wave[a:b] = 0.1 * np.where(np.arange(b - a) % 2, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()
