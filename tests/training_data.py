"""A tiny synthetic anti-spoofing data set for training tests: two signal families a model can tell
apart in a few steps: "bona fide" harmonic tones with vibrato and "spoof" band-limited noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000


def harmonic_tone(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = rng.uniform(100.0, 300.0)
    phase = 2 * np.pi * f0 * (t + 0.002 * np.sin(2 * np.pi * rng.uniform(3.0, 7.0) * t))
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (rng.uniform(0.1, 0.3) * x / np.max(np.abs(x))).astype(np.float32)


def band_noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    low = rng.uniform(500.0, 3000.0)
    spectrum[(freqs < low) | (freqs > low + rng.uniform(1000.0, 3000.0))] = 0.0
    x = np.fft.irfft(spectrum, n)
    return (rng.uniform(0.1, 0.3) * x / np.max(np.abs(x))).astype(np.float32)


def write_folder_set(
    root: Path, per_class: int, seed: int, fmt: str = "WAV", seconds: tuple[float, float] = (0.5, 1.5)
) -> Path:
    """``root/bonafide/*.wav`` and ``root/spoof/*.wav`` (the folder layout), mostly shorter than a
    window so the repeat padding is exercised."""
    rng = np.random.default_rng(seed)
    for label, make in (("bonafide", harmonic_tone), ("spoof", band_noise)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = "wav" if fmt == "WAV" else "flac"
            sf.write(
                root / label / f"{label}_{i:03d}.{suffix}", make(rng, rng.uniform(*seconds)), RATE, format=fmt
            )
    return root


def write_csv_set(root: Path, per_class: int, seed: int) -> Path:
    """FLAC files listed in ``root/list.csv`` as ``path,label`` (the CSV layout)."""
    write_folder_set(root, per_class, seed, fmt="FLAC")
    lines = ["path,label"]
    lines += [f"{p.relative_to(root)},{p.parent.name}" for p in sorted(root.rglob("*.flac"))]
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return root / "list.csv"
