"""Synthetic speech made at test time with espeak-ng: an honestly labelled, if dated, spoof class.

espeak-ng is a formant synthesiser, far easier to spot than modern neural voice cloning; tests use it
because it is free, offline and deterministic, not as a stand-in for today's deepfakes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def espeak_ng(text: str, out: Path, voice: str | None = None) -> Path:
    """Write ``text`` spoken by espeak-ng (22.05 kHz WAV) to ``out``; fails the test without espeak-ng."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is required for this test (.ci/run installs it: apt-get install espeak-ng)")
    subprocess.run([espeak, *(["-v", voice] if voice else []), "-w", str(out), text], check=True)
    return out
