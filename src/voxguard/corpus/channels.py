"""Channel copies: what phones, codecs, rooms and microphones do to a voice, applied to both classes.

A detector trained on clean synthetic speech against real speech from a few sources learns the sources
(bandwidth, codec, room) instead of the synthesis. So every training and dev file also gets copies through
random channel chains, real and synthetic alike, and the label never tells the channel.

Training chains draw from: a phone line (mu-law or A-law, varying band edges), MP3/Opus/AAC round trips,
G.722, white or pink noise, reverberation (a synthetic room response), a random low-pass (bandwidth must
not be a cue: vocoders and old recordings both lack the top band), and RawBoost (Tak et al., ICASSP 2022:
linear and non-linear convolutive noise, impulsive signal-dependent noise, stationary coloured noise).

The test split gets fixed copies through channels training never used, so the evaluation also measures
unseen channels: a GSM full-rate phone call, an Ogg Vorbis file, and babble (other people talking) with
room noise.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import numpy as np
import torch
import torchaudio.functional as taf

from ..audio.options import SAMPLE_RATE
from ..training import augment

_EPS = 1e-12


def ffmpeg_decode(data: bytes, fmt: str) -> np.ndarray:
    """Audio in container or raw format ``fmt`` -> 16 kHz mono float32, through ffmpeg."""
    command = [
        "ffmpeg",
        "-v",
        "error",
        "-f",
        fmt,
        "-i",
        "-",
        "-f",
        "f32le",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "-",
    ]
    raw = subprocess.run(command, input=data, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32).copy()


def _ffmpeg_round_trip(x: np.ndarray, rate: int, args: list[str], fmt: str, length: int) -> np.ndarray:
    """Encode ``x`` (at ``rate``) with ffmpeg and decode it to ``length`` samples of 16 kHz float32."""
    pcm = np.clip(x, -1.0, 1.0).astype(np.float32).tobytes()
    encoded = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "f32le",
            "-ar",
            str(rate),
            "-ac",
            "1",
            "-i",
            "-",
            *args,
            "-f",
            fmt,
            "-",
        ],
        input=pcm,
        capture_output=True,
        check=True,
    ).stdout
    decoded = ffmpeg_decode(encoded, fmt)
    return np.pad(decoded[:length], (0, max(0, length - len(decoded)))).astype(np.float32)


def _band(x: np.ndarray, low: float, high: float, rate: int) -> torch.Tensor:
    y = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for _ in range(2):
        y = taf.lowpass_biquad(taf.highpass_biquad(y, rate, low), rate, high)
    return y


def phone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A narrow-band call: band-pass, 8 kHz, G.711 mu-law or A-law, back to 16 kHz."""
    y = taf.resample(torch.from_numpy(x.astype(np.float32)), SAMPLE_RATE, 8000)
    y = _band(y.numpy(), 300 + rng.uniform(-100, 100), 3400 + rng.uniform(-200, 150), 8000).numpy()
    codec = "pcm_mulaw" if rng.random() < 0.5 else "pcm_alaw"
    return _ffmpeg_round_trip(y, 8000, ["-c:a", codec], "wav", len(x))


# Narrow-band speech codecs (encoder arguments, container): what VoIP and mobile calls do to a voice.
NARROWBAND: tuple[tuple[list[str], str], ...] = (
    (["-c:a", "libspeex"], "ogg"),
    (["-c:a", "libcodec2", "-mode", "3200"], "codec2"),
    (["-c:a", "libcodec2", "-mode", "1600"], "codec2"),
    (["-c:a", "g726", "-b:a", "24k"], "wav"),
    (["-c:a", "g726", "-b:a", "32k"], "wav"),
)


def narrowband(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A narrow-band call through Speex, Codec 2 or G.726 (the test split's GSM is none of them)."""
    y = taf.resample(torch.from_numpy(x.astype(np.float32)), SAMPLE_RATE, 8000)
    y = _band(y.numpy(), 300 + rng.uniform(-100, 100), 3400 + rng.uniform(-200, 150), 8000).numpy()
    args, fmt = NARROWBAND[int(rng.integers(len(NARROWBAND)))]
    return _ffmpeg_round_trip(y, 8000, args, fmt, len(x))


def gsm(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A GSM full-rate mobile call (13 kbit/s): held out of training, used for the test copies."""
    y = taf.resample(torch.from_numpy(x.astype(np.float32)), SAMPLE_RATE, 8000)
    y = _band(y.numpy(), 300.0, 3400.0, 8000).numpy()
    return _ffmpeg_round_trip(y, 8000, ["-c:a", "libgsm"], "gsm", len(x))


def g722(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _ffmpeg_round_trip(x, SAMPLE_RATE, ["-c:a", "g722"], "g722", len(x))


def vorbis(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ogg Vorbis at a low quality: held out of training, used for the test copies."""
    return _ffmpeg_round_trip(x, SAMPLE_RATE, ["-c:a", "libvorbis", "-q:a", "0"], "ogg", len(x))


def codec(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return augment.codec_round_trip(x, rng)


def noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return augment.add_noise(x, rng, 5.0, 35.0)


def room_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Exponentially decaying noise with a direct path: a cheap, serviceable room impulse response."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0
    tail *= 10 ** (rng.uniform(-18, -6) / 20) / (np.sqrt(np.sum(tail**2)) + _EPS)
    tail[0] = 1.0
    return tail


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y = taf.fftconvolve(
        torch.from_numpy(x.astype(np.float32)),
        torch.from_numpy(room_response(rng, rng.uniform(0.15, 0.9)).astype(np.float32)),
    )
    return _match(y[: len(x)].numpy(), x)


def lowpass(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y = torch.from_numpy(x.astype(np.float32))
    cutoff = rng.uniform(3500.0, 7800.0)
    for _ in range(int(rng.integers(1, 4))):
        y = taf.lowpass_biquad(y, SAMPLE_RATE, cutoff)
    return y.numpy()


def _fir(rng: np.random.Generator, taps: int) -> np.ndarray:
    """A random band-pass FIR filter (windowed sinc with random band edges)."""
    low = rng.uniform(20, 1000) / SAMPLE_RATE
    high = rng.uniform(3000, 7900) / SAMPLE_RATE
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * high * np.sinc(2 * high * n) - 2 * low * np.sinc(2 * low * n)
    return h * np.hamming(taps)


def rawboost(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RawBoost's three noises in series (Tak et al., ICASSP 2022), on our own small parameter ranges."""
    y = np.zeros_like(x, dtype=np.float64)
    for order in range(1, int(rng.integers(2, 5))):  # linear and non-linear convolutive noise
        h = _fir(rng, int(rng.integers(10, 60)) | 1)
        y += np.convolve(np.power(x, order), h, mode="same") * (1.0 if order == 1 else rng.uniform(0.05, 0.4))
    y = _match(y.astype(np.float32), x)
    hits = rng.random(len(y)) < rng.uniform(0.002, 0.02)  # impulsive, signal-dependent
    y[hits] += y[hits] * rng.uniform(-1, 1, hits.sum()) * rng.uniform(1, 5)
    coloured = np.convolve(rng.standard_normal(len(y)), _fir(rng, 41), mode="same")  # stationary
    level = float(np.sqrt(np.mean(np.square(y)))) / 10 ** (rng.uniform(15, 40) / 20)
    return (y + coloured / (np.sqrt(np.mean(coloured**2)) + _EPS) * level).astype(np.float32)


def _match(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    ref = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    return (y * (ref / rms) if rms > _EPS else y).astype(np.float32)


Channel = Callable[[np.ndarray, np.random.Generator], np.ndarray]
# In the order a real signal meets them: the room and its noise, the microphone, the line, the codec.
TRAINING: dict[str, Channel] = {
    "reverb": reverb,
    "noise": noise,
    "rawboost": rawboost,
    "lowpass": lowpass,
    "phone": phone,
    "narrowband": narrowband,
    "g722": g722,
    "codec": codec,
}
_TRANSMISSION = ("phone", "narrowband", "g722", "codec")


def random_chain(
    x: np.ndarray, rng: np.random.Generator, transmission: str | None = None
) -> tuple[np.ndarray, str]:
    """One to three training channels (at most one phone line or codec), applied in order;
    ``transmission`` forces that one."""
    acoustic = [n for n in TRAINING if n not in _TRANSMISSION]
    chosen = set(rng.choice(acoustic, size=int(rng.integers(0, 3)), replace=False).tolist())
    if transmission is not None:
        chosen.add(transmission)
    elif not chosen or rng.random() < 0.6:
        chosen.add(_TRANSMISSION[int(rng.integers(len(_TRANSMISSION)))])
    names = [n for n in TRAINING if n in chosen]
    for name in names:
        x = TRAINING[name](x, rng)
    return _finite(x), "+".join(names)


def babble(x: np.ndarray, rng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
    """Other people talking (three to five voices) plus room noise at 10-20 dB SNR."""
    mix = np.zeros_like(x)
    for other in (others[int(i)] for i in rng.choice(len(others), size=int(rng.integers(3, 6)))):
        piece = np.resize(np.roll(other, int(rng.integers(len(other)))), len(x))
        mix += piece / (np.sqrt(np.mean(piece**2)) + _EPS)
    signal = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    mix *= signal / (np.sqrt(np.mean(mix**2)) + _EPS) / 10 ** (rng.uniform(10, 20) / 20)
    return _finite(augment.add_noise(x + mix.astype(np.float32), rng, 25.0, 35.0))


TEST: dict[str, Channel] = {"gsm": gsm, "vorbis": vorbis}


def _finite(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x), initial=0.0))
    return (x / peak * 0.99 if peak > 0.99 else x).astype(np.float32)
