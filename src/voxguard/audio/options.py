"""The rate and window the model is built for, and the decoding and windowing knobs.

Imports nothing heavy, so settings and the command line can name them without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16000
WINDOW = 64600  # AASIST input length (~4.04 s at 16 kHz)
DEFAULT_HOP = 32000


@dataclass(frozen=True)
class AudioOptions:
    """The decoding and windowing knobs, grouped so callers pass one value."""

    preprocess: str = "robust"
    hop: int = DEFAULT_HOP
    target_rms_dbfs: float = -24.0
    max_gain_db: float = 40.0
    silence_floor_dbfs: float = -60.0
    min_duration_s: float = 0.25
    max_duration_s: float = 600.0
