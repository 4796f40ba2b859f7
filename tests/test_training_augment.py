"""Each augmentation keeps the window's length, has the effect it claims, and is fixed by a seed."""

from __future__ import annotations

import numpy as np
import pytest

from voxguard.audio.options import WINDOW
from voxguard.training.augment import (
    AUGMENTATIONS,
    CODECS,
    Augmenter,
    add_noise,
    codec_round_trip,
    encode,
    parse_augmentations,
    random_gain,
    round_trip,
    speed,
    telephone,
)

RATE = 16000


def tones(*freqs: float, amplitude: float = 0.2) -> np.ndarray:
    t = np.arange(WINDOW) / RATE
    return (amplitude * sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)).astype(np.float32)


def speechlike() -> np.ndarray:
    """Harmonics of 150 Hz up to 7 kHz, amplitude-modulated: broadband like voiced speech."""
    t = np.arange(WINDOW) / RATE
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 47))
    return (0.2 * x * (1 + 0.5 * np.sin(2 * np.pi * 4 * t)) / np.max(np.abs(x))).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def band_energy(x: np.ndarray, low: float, high: float) -> float:
    freqs = np.fft.rfftfreq(x.shape[0], 1 / RATE)
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return float(power[(freqs >= low) & (freqs < high)].sum())


def snr_db(clean: np.ndarray, other: np.ndarray) -> float:
    return 10 * np.log10(
        np.sum(clean.astype(np.float64) ** 2) / np.sum((other - clean).astype(np.float64) ** 2)
    )


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_shape_dtype_and_seed_determinism(name: str) -> None:
    x = speechlike()
    augment = Augmenter((name,), probability=1.0)
    a, b = augment(x, np.random.default_rng(11)), augment(x, np.random.default_rng(11))
    assert a.shape == x.shape and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.all(np.isfinite(a))
    assert not np.allclose(a, x, atol=1e-4)
    assert not np.array_equal(a, augment(x, np.random.default_rng(12)))


def test_gain_scales_by_the_drawn_decibels_without_clipping() -> None:
    x = tones(440, amplitude=0.01)
    ratios = [20 * np.log10(rms(random_gain(x, np.random.default_rng(s))) / rms(x)) for s in range(200)]
    assert -30.0 <= min(ratios) < -25.0 and 1.0 < max(ratios) <= 6.0
    loud = tones(440, amplitude=0.9)
    for seed in range(50):
        y = random_gain(loud, np.random.default_rng(seed))
        assert np.max(np.abs(y)) <= 1.0 + 1e-6
        np.testing.assert_allclose(
            y / np.max(np.abs(y)), loud / np.max(np.abs(loud)), atol=1e-5
        )  # no clipping


def test_noise_lands_at_an_snr_in_range_and_leaves_silence_alone() -> None:
    x = speechlike()
    snrs = [snr_db(x, add_noise(x, np.random.default_rng(s))) for s in range(100)]
    assert 5.0 - 0.5 <= min(snrs) < 10.0 and 25.0 < max(snrs) <= 30.0 + 0.5
    silence = np.zeros(WINDOW, dtype=np.float32)
    assert np.array_equal(add_noise(silence, np.random.default_rng(0)), silence)


def test_telephone_keeps_the_voice_band_and_removes_the_rest() -> None:
    rng = np.random.default_rng(0)
    in_band = telephone(tones(1000), rng)
    assert 0.7 < rms(in_band) / rms(tones(1000)) < 1.3
    for outside in (80.0, 5000.0, 7000.0):
        x = tones(outside)
        assert band_energy(telephone(x, rng), 0, 8000) < 0.01 * band_energy(x, 0, 8000), outside
    y = telephone(speechlike(), rng)
    # What is left above 4 kHz is the resampler's transition band and mu-law noise: over 20 dB down.
    assert band_energy(y, 4000, 8000) < 1e-2 * band_energy(speechlike(), 4000, 8000)


@pytest.mark.parametrize(("encoder", "container", "rates"), CODECS)
def test_each_codec_round_trips_in_memory_time_aligned(encoder: str, container: str, rates: tuple) -> None:
    x = speechlike()
    assert 0 < len(encode(x, encoder, container, rates[0])) < x.nbytes // 10  # really compressed
    y = round_trip(x, encoder, container, rates[0])
    assert y.shape == x.shape and y.dtype == np.float32
    # Lossy but aligned: one sample of misalignment at these frequencies already costs most of the SNR.
    assert 8.0 < snr_db(x, y) < 40.0
    assert snr_db(x, y) > snr_db(x, np.roll(y, 1)) + 3.0


def _peak_hz(x: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x))) * RATE / len(x))


def test_speed_moves_the_pitch_by_the_drawn_factor_within_15_percent() -> None:
    x = tones(1000)
    peaks = [_peak_hz(speed(x, np.random.default_rng(s))) for s in range(40)]
    assert 850 - 5 <= min(peaks) < 900 and 1100 < max(peaks) <= 1150 + 5
    y = speed(speechlike(), np.random.default_rng(0))
    assert y.shape == (WINDOW,) and np.all(np.isfinite(y))


def test_adding_speed_keeps_the_other_augmentations_draws() -> None:
    """Each augmentation has its own random stream, so a recipe without ``speed`` computes what it did
    before ``speed`` existed: the gain drawn from the fourth of four streams, as then."""
    x = speechlike()
    fourth = np.random.default_rng(3).spawn(4)[3]
    fourth.random()  # the draw that decides whether gain applies (always, at probability 1)
    assert np.array_equal(
        Augmenter(("gain",), probability=1.0)(x, np.random.default_rng(3)), random_gain(x, fourth)
    )


def test_codec_choice_varies_with_the_seed() -> None:
    x = speechlike()
    outputs = {codec_round_trip(x, np.random.default_rng(s)).tobytes() for s in range(6)}
    assert len(outputs) >= 3


def test_augmenter_probability_and_order() -> None:
    x = speechlike()
    assert np.array_equal(Augmenter(AUGMENTATIONS, probability=0.0)(x, np.random.default_rng(0)), x)
    # The order listed does not matter: the chain is fixed (speed, noise, telephone, codec, gain).
    a = Augmenter(("gain", "noise"), probability=1.0)(x, np.random.default_rng(5))
    b = Augmenter(("noise", "gain"), probability=1.0)(x, np.random.default_rng(5))
    assert np.array_equal(a, b)
    applied = [
        not np.array_equal(Augmenter(("gain",), probability=0.5)(x, np.random.default_rng(s)), x)
        for s in range(200)
    ]
    assert 0.35 < np.mean(applied) < 0.65


def test_parse_augmentations() -> None:
    assert parse_augmentations("gain, codec,gain") == ("gain", "codec")
    assert parse_augmentations("") == ()
    with pytest.raises(ValueError, match="reverb"):
        parse_augmentations("gain,reverb")
    with pytest.raises(ValueError, match="probability"):
        Augmenter(("gain",), probability=1.5)
