"""Optional training augmentations that imitate what real calls and uploads do to a voice.

AASIST learns from ASVspoof 2019 LA: clean studio speech, every clip at a similar level, no channel. In
production the same voice arrives quieter or louder, over a noisy room, through a phone line and a lossy
codec, and the published model's EER collapses on such audio (about 43 % on In-the-Wild). Each
augmentation below puts one of those conditions into training so the model cannot use it as a cue:

- ``gain``: level from -30 to +6 dB (peak-limited, never clipped). The official model calls synthetic
  speech real once it is quietened by 20-30 dB; training on random levels removes that shortcut.
- ``noise``: white or pink noise at 5-30 dB SNR: rooms, microphones, street noise.
- ``telephone``: narrow-band phone line: band-pass about 300-3400 Hz, 8 kHz sampling and G.711 mu-law
  companding, back to 16 kHz. Removes the high band where many vocoder artefacts live, so the model
  must also find them in the telephone band.
- ``codec``: an MP3, Opus or AAC round trip at a voice-call or streaming bit rate, encoded and decoded
  in memory with FFmpeg (PyAV), time-aligned to the input.
- ``speed``: played 15 % slower to 15 % faster, so pitch, formants and pace move together as they do
  between speakers. A corpus has few synthetic voices and many real speakers, so a detector can learn
  which voices are synthetic instead of how synthetic speech is made; moving every voice around blurs
  that shortcut for both classes.

Every function maps a float32 window to a float32 window of the same length and draws its randomness
only from the generator it is given, so a seed fixes the result.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch
import torchaudio.functional as taf

from ..audio.decoding import decode
from ..audio.options import SAMPLE_RATE

AUGMENTATIONS: tuple[str, ...] = ("gain", "noise", "telephone", "codec", "speed")
TELEPHONE_RATE = 8000
# (encoder, container, bit rates in bit/s): voice-call and low-rate streaming settings.
CODECS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("libmp3lame", "mp3", (24_000, 32_000, 64_000)),
    ("libopus", "ogg", (12_000, 16_000, 24_000)),
    ("aac", "adts", (24_000, 32_000, 48_000)),
)
# Encoders delay their output (Opus pre-skip, AAC priming: up to 1024 samples); the round trip is
# re-aligned by cross-correlation over this many samples.
_MAX_CODEC_DELAY = 2048
_EPS = 1e-12


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def random_gain(
    x: np.ndarray, rng: np.random.Generator, low_db: float = -30.0, high_db: float = 6.0
) -> np.ndarray:
    """Scale by a gain drawn uniformly in dB; a louder result whose peak would pass 1.0 is scaled back
    to peak 1.0 rather than clipped (clipping would add a distortion cue of its own)."""
    y = x * np.float32(10.0 ** (rng.uniform(low_db, high_db) / 20.0))
    peak = float(np.max(np.abs(y), initial=0.0))
    return (y / peak if peak > 1.0 else y).astype(np.float32)


def add_noise(
    x: np.ndarray, rng: np.random.Generator, low_snr_db: float = 5.0, high_snr_db: float = 30.0
) -> np.ndarray:
    """Add white or pink (1/f) Gaussian noise at an SNR drawn uniformly in dB; silence stays silence."""
    signal = _rms(x)
    if signal < _EPS:
        return x.copy()
    noise = rng.standard_normal(x.shape[0])
    if rng.random() < 0.5:  # pink: shape the white spectrum by 1/sqrt(f)
        spectrum = np.fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, spectrum.shape[0]))
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n=x.shape[0])
    snr_db = rng.uniform(low_snr_db, high_snr_db)
    noise *= signal / (_rms(noise) + _EPS) / 10.0 ** (snr_db / 20.0)
    return (x + noise).astype(np.float32)


def telephone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A narrow-band phone line: 16 kHz -> 8 kHz, band-pass, G.711 mu-law, -> 16 kHz.

    The band edges vary by +-50 Hz around 300 and 3400 Hz because real lines and handsets do. The
    filters are cascaded biquads (4th order), not brick walls, like an analogue line.
    """
    low, high = 300.0 + rng.uniform(-50.0, 50.0), 3400.0 + rng.uniform(-50.0, 50.0)
    y = taf.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), SAMPLE_RATE, TELEPHONE_RATE)
    for _ in range(2):
        y = taf.highpass_biquad(y, TELEPHONE_RATE, low)
        y = taf.lowpass_biquad(y, TELEPHONE_RATE, high)
    y = taf.mu_law_decoding(taf.mu_law_encoding(y.clamp(-1.0, 1.0), 256), 256)
    y = taf.resample(y, TELEPHONE_RATE, SAMPLE_RATE)
    return _fit(y.numpy(), x.shape[0])


def speed(x: np.ndarray, rng: np.random.Generator, low: float = 0.85, high: float = 1.15) -> np.ndarray:
    """Resample as if recorded at ``factor`` times the rate (1 % steps keep the resampling kernel small);
    a faster window comes out short and is tiled from its start, as the service fills short audio."""
    factor = round(float(rng.uniform(low, high)), 2)
    y = taf.resample(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), round(SAMPLE_RATE * factor), SAMPLE_RATE
    ).numpy()
    return np.tile(y, -(-x.shape[0] // max(y.shape[0], 1)))[: x.shape[0]].astype(np.float32)


def codec_round_trip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Encode with a randomly chosen lossy codec and bit rate, decode, and re-align to the input."""
    encoder, container, rates = CODECS[int(rng.integers(len(CODECS)))]
    return round_trip(x, encoder, container, int(rates[int(rng.integers(len(rates)))]))


def round_trip(x: np.ndarray, encoder: str, container: str, bit_rate: int) -> np.ndarray:
    """Encode and decode in memory; the result is re-aligned to ``x`` and has its length."""
    # Silence after the clip lets the decoded stream cover the whole input once the delay is removed.
    padded = np.concatenate([x, np.zeros(_MAX_CODEC_DELAY, dtype=np.float32)]).astype(np.float32)
    y = decode(encode(padded, encoder, container, bit_rate), min_duration_s=0.0).waveform
    return _fit(y[_delay(x, y) :], x.shape[0])


def encode(x: np.ndarray, encoder: str, container: str, bit_rate: int) -> bytes:
    """16 kHz mono float32 -> an encoded file in memory."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(encoder, rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    return buffer.getvalue()


def _delay(reference: np.ndarray, delayed: np.ndarray) -> int:
    """The lag in ``0 .. _MAX_CODEC_DELAY`` at which ``delayed`` best matches ``reference``."""
    n = reference.shape[0]
    size = 1 << (n + _MAX_CODEC_DELAY + n).bit_length()
    head = delayed[: n + _MAX_CODEC_DELAY]
    corr = np.fft.irfft(np.fft.rfft(head, size) * np.conj(np.fft.rfft(reference, size)), size)
    return int(np.argmax(corr[: _MAX_CODEC_DELAY + 1]))


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Exactly ``n`` samples: cut, or pad the rare few missing at the end with silence."""
    y = np.asarray(y, dtype=np.float32)[:n]
    return np.pad(y, (0, n - y.shape[0])) if y.shape[0] < n else y


_FUNCTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "gain": random_gain,
    "noise": add_noise,
    "telephone": telephone,
    "codec": codec_round_trip,
    "speed": speed,
}
# The order a real signal meets them: the voice, the room, the line, the codec, the playback level.
_CHAIN = ("speed", "noise", "telephone", "codec", "gain")
# Which child generator each draws from: fixed, so adding one never changes another's draws.
_STREAM = ("noise", "telephone", "codec", "gain", "speed")


def parse_augmentations(text: str) -> tuple[str, ...]:
    """``"gain,codec"`` -> ``("gain", "codec")``; unknown names are an error naming the known ones."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in _FUNCTIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}"
        )
    return names


@dataclass(frozen=True)
class Augmenter:
    """Applies each chosen augmentation with probability ``probability``, in the order a real signal
    meets them (:data:`_CHAIN`) whatever order they were listed in."""

    names: Sequence[str]
    probability: float = 0.5

    def __post_init__(self) -> None:
        parse_augmentations(",".join(self.names))
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"augmentation probability must be in [0, 1], got {self.probability}")

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # One child generator per augmentation: what one draws never shifts another's draws.
        children = dict(zip(_STREAM, rng.spawn(len(_STREAM)), strict=True))
        for name in _CHAIN:
            child = children[name]
            if name in self.names and child.random() < self.probability:
                x = _FUNCTIONS[name](x, child)
        return x
