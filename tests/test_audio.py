"""Decoding (every accepted format, limits, hostile inputs) and windowing: the ``voxguard.audio`` package.

All fixtures are generated in memory; the real recordings come from the ``samples_dir`` fixture.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as taf

from voxguard.audio import decoding
from voxguard.audio.decoding import AudioInfo, decode
from voxguard.audio.errors import ACCEPTED_FORMATS, AudioError
from voxguard.audio.options import DEFAULT_HOP, SAMPLE_RATE, WINDOW, AudioOptions
from voxguard.audio.speech import frame_levels, speech_seconds, speech_span
from voxguard.audio.streaming import StreamWindower
from voxguard.audio.windows import make_windows, window_starts

# --------------------------------------------------------------------------- helpers


def chirp(
    rate: int, seconds: float, amplitude: float = 0.5, f0: float = 200.0, f1: float = 3e3
) -> np.ndarray:
    """A linear chirp: non-periodic, so a lossy codec's delay shows up as one clear correlation peak."""
    t = np.arange(round(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (amplitude * np.sin(phase)).astype(np.float32)


def sine(n: int, amplitude: float, freq: float = 440.0) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE)).astype(np.float32)


def sf_bytes(x: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def av_bytes(fmt: str, codec: str, x: np.ndarray, rate: int) -> bytes:
    """Encode mono float32 ``x`` with PyAV into an in-memory container."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buf.getvalue()


def opus_silence_bomb(fmt: str, seconds: int) -> bytes:
    """Many minutes of Opus silence in a few hundred kB: one encoded packet muxed over and over."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 48000), np.float32), format="flt", layout="mono")
        frame.sample_rate = 48000
        payload = bytes(stream.encode(frame)[10])
        for i in range(seconds * 50):  # 20 ms per packet
            packet = av.Packet(payload)
            packet.pts = packet.dts = i * 960
            packet.duration = 960
            packet.time_base = Fraction(1, 48000)
            packet.stream = stream
            container.mux(packet)
    return buf.getvalue()


def flac_silence(seconds: int) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", SAMPLE_RATE, 1, format="FLAC") as f:
        minute = np.zeros(SAMPLE_RATE * 60, dtype=np.int16)
        for _ in range(seconds // 60):
            f.write(minute)
    return buf.getvalue()


def to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return x
    return taf.resample(torch.from_numpy(np.ascontiguousarray(x)), rate, SAMPLE_RATE).numpy()


def aligned_correlation(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 1600) -> float:
    """Pearson correlation at the best lag within ``max_lag`` samples (lossy codecs add delay/padding)."""
    n = min(len(decoded), len(reference))
    a, b = decoded[:n] - decoded[:n].mean(), reference[:n] - reference[:n].mean()
    size = 1 << math.ceil(math.log2(2 * n))
    xcorr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    lag = int(lags[np.argmax(xcorr[lags])])
    a, b = (decoded[lag:], reference) if lag >= 0 else (decoded, reference[-lag:])
    m = min(len(a), len(b))
    return float(np.corrcoef(a[:m], b[:m])[0, 1])


def expect_error(data: bytes, code: str, **limits: float) -> AudioError:
    with pytest.raises(AudioError) as caught:
        decode(data, **limits)
    assert caught.value.code == code, caught.value.detail
    assert ACCEPTED_FORMATS in caught.value.detail
    return caught.value


def rms_db(x: np.ndarray) -> float:
    return 20 * math.log10(math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))))


# --------------------------------------------------------------------------- lossless formats


@pytest.mark.parametrize(
    ("subtype", "codec", "tolerance"),
    [
        ("PCM_U8", "pcm_u8", 1 / 64),
        ("PCM_16", "pcm_16", 1e-4),
        ("PCM_24", "pcm_24", 1e-6),
        ("PCM_32", "pcm_32", 1e-7),
        ("FLOAT", "pcm_float", 0.0),
        ("DOUBLE", "pcm_double", 0.0),
    ],
)
def test_wav_subtypes(subtype: str, codec: str, tolerance: float) -> None:
    x = chirp(SAMPLE_RATE, 1.0)
    decoded = decode(sf_bytes(x, SAMPLE_RATE, "WAV", subtype))
    assert decoded.info == AudioInfo(SAMPLE_RATE, 1, 1.0, "wav", codec)
    assert decoded.waveform.dtype == np.float32 and decoded.waveform.shape == x.shape
    np.testing.assert_allclose(decoded.waveform, x, rtol=0, atol=tolerance)


def test_flac_stereo_44k1() -> None:
    left, right = chirp(44100, 1.5), chirp(44100, 1.5, amplitude=0.3, f0=500)
    decoded = decode(sf_bytes(np.stack([left, right], axis=1), 44100, "FLAC", "PCM_24"))
    assert (decoded.info.container, decoded.info.codec) == ("flac", "flac")
    assert (decoded.info.sample_rate, decoded.info.channels) == (44100, 2)
    expected = to_16k((left + right) / 2, 44100)
    assert decoded.waveform.shape == (math.ceil(len(left) * SAMPLE_RATE / 44100),)
    np.testing.assert_allclose(decoded.waveform, expected, rtol=0, atol=1e-5)


def test_stereo_is_averaged_then_resampled() -> None:
    left, right = chirp(44100, 1.0), chirp(44100, 1.0, amplitude=0.2, f0=1000, f1=1500)
    decoded = decode(sf_bytes(np.stack([left, right], axis=1), 44100, "WAV", "FLOAT"))
    assert (decoded.info.sample_rate, decoded.info.channels) == (44100, 2)
    mono = ((left.astype(np.float64) + right) / 2).astype(np.float32)
    np.testing.assert_allclose(decoded.waveform, to_16k(mono, 44100), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 48000])
def test_other_input_rates_are_resampled(rate: int) -> None:
    x = chirp(rate, 2.0, f1=3500)
    decoded = decode(sf_bytes(x, rate, "WAV", "PCM_16"))
    assert decoded.info.sample_rate == rate and decoded.info.duration_s == pytest.approx(2.0)
    assert decoded.waveform.shape == (math.ceil(len(x) * SAMPLE_RATE / rate),)
    np.testing.assert_allclose(decoded.waveform, to_16k(x, rate), rtol=0, atol=1e-3)


# --------------------------------------------------------------------------- lossy formats


def _encode_lossy(kind: str, x: np.ndarray, rate: int) -> bytes:
    match kind:
        case "ogg_vorbis":
            return sf_bytes(x, rate, "OGG", "VORBIS")
        case "mp3":
            return sf_bytes(x, rate, "MP3")
        case "ogg_opus_libsndfile":
            return sf_bytes(x, rate, "OGG", "OPUS")
        case "ogg_opus_pyav":
            return av_bytes("ogg", "libopus", x, rate)
        case "webm_opus":
            return av_bytes("webm", "libopus", x, rate)
        case "m4a_aac":
            return av_bytes("mp4", "aac", x, rate)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "rate", "container", "codec"),
    [
        ("ogg_vorbis", 44100, "ogg", "vorbis"),
        ("mp3", 44100, "mp3", "mp3"),
        ("ogg_opus_libsndfile", 48000, "ogg", "opus"),
        ("ogg_opus_pyav", 48000, "ogg", "opus"),
        ("webm_opus", 48000, "webm", "opus"),
        ("m4a_aac", 44100, "mp4", "aac"),
    ],
)
def test_lossy_formats(kind: str, rate: int, container: str, codec: str) -> None:
    x = chirp(rate, 2.0)
    decoded = decode(_encode_lossy(kind, x, rate))
    assert (decoded.info.container, decoded.info.codec) == (container, codec)
    assert (decoded.info.sample_rate, decoded.info.channels) == (rate, 1)
    # Encoder priming/padding may add up to a few frames (AAC in MP4 keeps its 1024-sample priming).
    assert decoded.info.duration_s == pytest.approx(2.0, abs=0.06)
    assert len(decoded.waveform) == pytest.approx(2 * SAMPLE_RATE, abs=0.06 * SAMPLE_RATE)
    assert aligned_correlation(decoded.waveform, to_16k(x, rate)) > 0.9


def test_ogg_opus_is_read_by_libsndfile_at_its_input_rate() -> None:
    """libsndfile >= 1.1 opens Ogg/Opus itself and decodes at the rate in the Opus header."""
    x = chirp(16000, 1.0)
    data = sf_bytes(x, 16000, "OGG", "OPUS")
    with sf.SoundFile(io.BytesIO(data)) as f:
        assert (f.format, f.subtype, f.samplerate) == ("OGG", "OPUS", 16000)
    decoded = decode(data)
    assert decoded.info.sample_rate == 16000 and len(decoded.waveform) == len(x)
    assert aligned_correlation(decoded.waveform, x) > 0.9


# --------------------------------------------------------------------------- the shared real recordings


def test_reference_flac_is_bit_exact(samples_dir: Path) -> None:
    path = samples_dir / "p225_001_mic1.flac"
    decoded = decode(path.read_bytes())
    expected, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE and decoded.waveform.shape == (32825,)
    assert np.array_equal(decoded.waveform, expected)
    assert decoded.info == AudioInfo(16000, 1, 32825 / 16000, "flac", "flac")


def test_voicememo_mp3(samples_dir: Path) -> None:
    decoded = decode((samples_dir / "voicememo.mp3").read_bytes())
    assert decoded.info == AudioInfo(44100, 1, 144667 / 44100, "mp3", "mp3")
    assert decoded.waveform.shape == (math.ceil(144667 * SAMPLE_RATE / 44100),)


def test_every_sample_decodes(samples_dir: Path) -> None:
    """Every original and derived recording decodes to about its source's duration."""
    sources = {"p225_001": 32825 / 16000, "p225_002": 63019 / 16000, "voicememo": 144667 / 44100}
    paths = [
        *sorted(samples_dir.glob("*.flac")),
        samples_dir / "voicememo.mp3",
        *sorted((samples_dir / "derived").iterdir()),
    ]
    assert len(paths) == 5 + 25
    for path in paths:
        expected = next(seconds for prefix, seconds in sources.items() if path.name.startswith(prefix))
        decoded = decode(path.read_bytes())
        assert decoded.info.duration_s == pytest.approx(expected, abs=0.05), path.name
        assert len(decoded.waveform) / SAMPLE_RATE == pytest.approx(expected, abs=0.05), path.name
        assert decoded.waveform.dtype == np.float32 and np.isfinite(decoded.waveform).all(), path.name
        assert 0.001 < float(np.abs(decoded.waveform).max()) <= 1.5, path.name


@pytest.mark.parametrize("variant", ["44k1-stereo.wav", "mp3-64k.mp3", "noise-snr30.flac", "opus-24k.ogg"])
def test_derived_copies_match_their_source(samples_dir: Path, variant: str) -> None:
    """Transcodes (libsndfile's Ogg/Opus decoder included) give back the source waveform.

    ``_tel8k.wav`` is left out: its 300-3400 Hz band-pass legitimately changes the waveform.
    """
    for source in ["p225_001_mic1.flac", "p225_002_mic2.flac", "voicememo.mp3"]:
        reference = decode((samples_dir / source).read_bytes()).waveform
        derived = decode((samples_dir / "derived" / f"{Path(source).stem}_{variant}").read_bytes()).waveform
        assert aligned_correlation(derived, reference) > 0.99, (source, variant)


# --------------------------------------------------------------------------- errors


def test_empty_input() -> None:
    expect_error(b"", "empty_input")


def test_random_bytes() -> None:
    expect_error(np.random.default_rng(0).bytes(5000), "undecodable_audio")


def test_png_is_not_audio() -> None:
    """FFmpeg would open this with its image demuxer; the demuxer whitelist refuses it."""
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 200
    with av.open(io.BytesIO(png)) as container:
        assert container.format.name == "png_pipe"
    expect_error(png, "undecodable_audio")


def test_truncated_wav() -> None:
    data = sf_bytes(np.full(SAMPLE_RATE, 0.1, np.float32), SAMPLE_RATE, "WAV", "PCM_16")
    expect_error(data[:30], "undecodable_audio")  # cut inside the header
    expect_error(data[:44], "audio_too_short")  # a complete header with zero frames
    partial = decode(data[: 44 + SAMPLE_RATE])  # cut mid-data: the complete frames are kept
    assert partial.waveform.shape == (SAMPLE_RATE // 2,)


def test_wav_header_claiming_more_data_than_present() -> None:
    data = bytearray(sf_bytes(np.full(SAMPLE_RATE, 0.1, np.float32), SAMPLE_RATE, "WAV", "PCM_16"))
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"  # RIFF and data chunk sizes say 4 GiB
    assert decode(bytes(data)).waveform.shape == (SAMPLE_RATE,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad: float) -> None:
    x = chirp(SAMPLE_RATE, 1.0)
    x[1234] = bad
    expect_error(sf_bytes(x, SAMPLE_RATE, "WAV", "FLOAT"), "invalid_samples")


def test_too_short() -> None:
    error = expect_error(sf_bytes(chirp(SAMPLE_RATE, 0.1), SAMPLE_RATE, "WAV", "PCM_16"), "audio_too_short")
    assert "0.25 s to 600 s" in error.detail
    assert (
        decode(sf_bytes(chirp(SAMPLE_RATE, 0.1), SAMPLE_RATE, "WAV"), min_duration_s=0.05).waveform.size
        == 1600
    )


def test_too_long_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = sf_bytes(chirp(SAMPLE_RATE, 2.0), SAMPLE_RATE, "WAV", "PCM_16")

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were read although the header already exceeds the limit")

    monkeypatch.setattr(sf.SoundFile, "read", no_reading)
    error = expect_error(data, "audio_too_long", max_duration_s=1.0)
    assert "1 s" in error.detail


@pytest.mark.parametrize("rate", [2000, 44099, 384000])
def test_unsupported_sample_rates(rate: int) -> None:
    """Absurd rates would make the buffer or torchaudio's resampling kernel huge (44099 Hz: gigabytes)."""
    expect_error(sf_bytes(np.zeros(rate, np.int16), rate, "WAV", "PCM_16"), "undecodable_audio")


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        decode(b"x", min_duration_s=5, max_duration_s=1)


def test_flac_bomb_refused_from_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = flac_silence(660)
    assert len(data) < 100_000
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("read despite the header"))
    expect_error(data, "audio_too_long")


def test_ogg_opus_bomb_refused_from_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = opus_silence_bomb("ogg", 660)
    assert len(data) < 200_000
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("read despite the header"))
    monkeypatch.setattr(
        decoding.av, "AudioResampler", lambda *a, **k: pytest.fail("decoded despite the header")
    )
    expect_error(data, "audio_too_long")


_REAL_RESAMPLER = av.AudioResampler


class _CountingResampler:
    """Stands in for ``av.AudioResampler`` and records how many samples were decoded."""

    seen: list[int]

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._inner = _REAL_RESAMPLER(*args, **kwargs)

    def resample(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        if frame is not None:
            self.seen.append(frame.samples)
        return self._inner.resample(frame)


@pytest.mark.parametrize("kind", ["webm_opus", "flac_unknown_length"])
def test_bomb_decoded_by_pyav_stops_at_the_limit(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a trustworthy length, decoding stops as soon as the limit is passed."""
    if kind == "webm_opus":
        data, rate = opus_silence_bomb("webm", 660), 48000
    else:
        # STREAMINFO total_samples = 0 means "unknown": libsndfile cannot read it, PyAV counts.
        flac = bytearray(flac_silence(660))
        info = int.from_bytes(flac[18:26], "big") & ~((1 << 36) - 1)
        flac[18:26] = info.to_bytes(8, "big")
        data, rate = bytes(flac), SAMPLE_RATE
    seen: list[int] = []
    monkeypatch.setattr(_CountingResampler, "seen", seen, raising=False)
    monkeypatch.setattr(decoding.av, "AudioResampler", _CountingResampler)
    expect_error(data, "audio_too_long")
    assert 600 * rate < sum(seen) <= 600 * rate + max(seen)  # stopped at the first frame past the limit


def _video_only(fmt: str, codec: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "codec"), [("mp4", "mpeg4"), ("webm", "libvpx")])
def test_video_without_audio(fmt: str, codec: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} video encoder to build the fixture")
    expect_error(_video_only(fmt, codec), "no_audio_stream")


# --------------------------------------------------------------------------- window positions


@pytest.mark.parametrize(
    ("n", "hop", "expected"),
    [
        (1, DEFAULT_HOP, [0]),
        (20000, DEFAULT_HOP, [0]),
        (WINDOW, DEFAULT_HOP, [0]),
        (WINDOW + 1, DEFAULT_HOP, [0, 1]),
        (100000, DEFAULT_HOP, [0, 32000, 100000 - WINDOW]),
        (WINDOW + 2 * DEFAULT_HOP, DEFAULT_HOP, [0, 32000, 64000]),  # grid lands on the end: no duplicate
        (WINDOW + 2 * DEFAULT_HOP + 5, DEFAULT_HOP, [0, 32000, 64000, 64005]),
        (WINDOW + 100, 16000, [0, 100]),
        (3 * WINDOW, WINDOW, [0, WINDOW, 2 * WINDOW]),
    ],
)
def test_window_starts(n: int, hop: int, expected: list[int]) -> None:
    starts = window_starts(n, hop=hop)
    assert starts == expected
    assert starts[-1] + WINDOW == n or n < WINDOW


@pytest.mark.parametrize(("n", "hop"), [(0, DEFAULT_HOP), (100, 0)])
def test_window_starts_rejects_nonsense(n: int, hop: int) -> None:
    with pytest.raises(ValueError):
        window_starts(n, hop=hop)


def test_short_clip_is_tiled_like_the_reference() -> None:
    w = np.random.default_rng(1).uniform(-0.5, 0.5, 20000).astype(np.float32)
    windows = make_windows(w, preprocess="reference")
    assert windows.batch.shape == (1, WINDOW) and windows.batch.dtype == np.float32
    assert np.array_equal(windows.batch[0], np.tile(w, 4)[:WINDOW])
    assert windows.spans == [(0.0, 20000 / SAMPLE_RATE)]
    assert windows.silent == [False]


def test_long_audio_windows_and_spans() -> None:
    w = np.random.default_rng(2).uniform(-0.5, 0.5, 100000).astype(np.float32)
    windows = make_windows(w, preprocess="reference")
    assert windows.batch.shape == (3, WINDOW)
    assert np.array_equal(windows.batch[0], w[:WINDOW])
    assert np.array_equal(windows.batch[1], w[32000 : 32000 + WINDOW])
    assert np.array_equal(windows.batch[2], w[-WINDOW:])
    assert windows.spans == [(0.0, 4.0375), (2.0, 6.0375), (35400 / 16000, 6.25)]


def test_exactly_one_window() -> None:
    w = np.random.default_rng(3).uniform(-0.5, 0.5, WINDOW).astype(np.float32)
    windows = make_windows(w, preprocess="reference")
    assert np.array_equal(windows.batch, w[None, :])
    assert windows.spans == [(0.0, WINDOW / SAMPLE_RATE)]


def test_first_window_of_real_files_starts_with_the_audio(samples_dir: Path) -> None:
    for name in ["p225_001_mic1.flac", "p225_002_mic2.flac", "voicememo.mp3"]:
        w = decode((samples_dir / name).read_bytes()).waveform
        first = make_windows(w, preprocess="reference").batch[0]
        assert np.array_equal(first[: min(len(w), WINDOW)], w[:WINDOW]), name
        assert np.array_equal(first, np.tile(w, WINDOW // len(w) + 1)[:WINDOW]), name


# --------------------------------------------------------------------------- level normalisation


def test_reference_mode_returns_raw_samples() -> None:
    w = sine(150000, 0.001)  # -63 dBFS: silent by the robust rule, but reference mode never judges
    windows = make_windows(w, preprocess="reference")
    for row, (start, _) in zip(windows.batch, windows.spans, strict=True):
        s = round(start * SAMPLE_RATE)
        assert np.array_equal(row, w[s : s + WINDOW])
    assert windows.silent == [False] * len(windows.spans)
    assert windows.rms_dbfs == pytest.approx([20 * math.log10(0.001 / math.sqrt(2))] * 4, abs=0.01)


@pytest.mark.parametrize("level_db", [-50.0, -30.0, -24.0, -6.0, 0.0])
def test_robust_mode_hits_the_target(level_db: float) -> None:
    w = sine(100000, math.sqrt(2) * 10 ** (level_db / 20))
    before = w.copy()
    windows = make_windows(w)
    assert np.array_equal(w, before)  # the caller's array is not modified
    assert windows.batch.dtype == np.float32
    assert windows.rms_dbfs == pytest.approx([level_db] * 3, abs=0.05)
    for row in windows.batch:
        assert rms_db(row) == pytest.approx(-24.0, abs=0.1)
    assert make_windows(w, target_rms_dbfs=-12.0).batch[0].std() == pytest.approx(10 ** (-12 / 20), rel=0.02)


def test_robust_mode_on_a_tiled_clip_uses_the_tiled_rms() -> None:
    w = np.concatenate([sine(8000, 0.5), np.zeros(8000, np.float32)])  # tiling changes nothing here
    windows = make_windows(w)
    assert windows.rms_dbfs[0] == pytest.approx(rms_db(np.tile(w, 5)[:WINDOW]), abs=1e-6)
    assert rms_db(windows.batch[0]) == pytest.approx(-24.0, abs=0.1)


def test_gain_cap() -> None:
    w = sine(WINDOW, math.sqrt(2) * 10 ** (-55 / 20))  # -55 dBFS would need +31 dB
    assert rms_db(make_windows(w, max_gain_db=20.0).batch[0]) == pytest.approx(-35.0, abs=0.1)
    assert rms_db(make_windows(w).batch[0]) == pytest.approx(-24.0, abs=0.1)
    loud = sine(WINDOW, 1.0)  # attenuation is never capped, and nothing is clipped
    assert rms_db(make_windows(loud, target_rms_dbfs=3.0).batch[0]) == pytest.approx(3.0, abs=0.1)
    assert float(np.abs(make_windows(loud, target_rms_dbfs=3.0).batch).max()) > 1.0


def test_silence_flags() -> None:
    quiet = sine(2 * SAMPLE_RATE * 5, math.sqrt(2) * 10 ** (-70 / 20))
    speech = sine(SAMPLE_RATE * 5, 0.1)
    windows = make_windows(np.concatenate([np.zeros(SAMPLE_RATE * 5, np.float32), quiet, speech]))
    # windows starting at 0..160000 lie inside the first 15 s; later ones reach the speech
    assert windows.silent == [True] * 6 + [False] * (len(windows.silent) - 6)
    assert windows.rms_dbfs[0] == -200.0  # digital silence is floored to a finite level
    assert np.isfinite(windows.batch).all()
    # the all-quiet window is amplified by at most max_gain_db
    assert rms_db(windows.batch[5]) == pytest.approx(-70.0 + 40.0, abs=0.2)


def test_all_silent_is_no_speech() -> None:
    w = sine(100000, 1e-4)
    with pytest.raises(AudioError) as caught:
        make_windows(w)
    assert caught.value.code == "no_speech" and "-60 dBFS" in caught.value.detail
    assert make_windows(w, silence_floor_dbfs=-90.0).silent == [False] * 3
    assert make_windows(np.zeros(1000, np.float32), preprocess="reference").silent == [False]


@pytest.mark.parametrize(
    ("waveform", "preprocess"),
    [(np.zeros((2, WINDOW), np.float32), "robust"), (np.zeros(0, np.float32), "robust"), (np.ones(10), "x")],
)
def test_make_windows_rejects_nonsense(waveform: np.ndarray, preprocess: str) -> None:
    with pytest.raises(ValueError):
        make_windows(waveform, preprocess=preprocess)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_stream_resampler_matches_whole_signal_resampling(rate):
    import torch
    import torchaudio.functional as taf

    from voxguard.audio.streaming import StreamResampler

    x = (np.random.default_rng(rate).standard_normal(rate * 3 + 123) * 0.1).astype(np.float32)
    want = taf.resample(torch.from_numpy(x), rate, 16000).numpy()
    for chunk in (160, 4096, rate):
        resampler = StreamResampler(rate)
        parts = [resampler.feed(x[i : i + chunk]) for i in range(0, len(x), chunk)] + [resampler.flush()]
        got = np.concatenate(parts)
        assert len(got) == len(want)
        assert np.abs(got - want).max() < 1e-6
        assert len(resampler._buffer) < 2 * chunk + 1200  # bounded, whatever the stream's length


# ---------------------------------------------------------------- how much speech


def _tone_in_silence(lead_s: float, tone_s: float, tail_s: float, noise_dbfs: float = -70.0) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(int(tone_s * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))  # syllable-like
    x = np.concatenate([np.zeros(int(lead_s * SAMPLE_RATE)), tone, np.zeros(int(tail_s * SAMPLE_RATE))])
    return (x + rng.standard_normal(len(x)) * 10 ** (noise_dbfs / 20)).astype(np.float32)


def test_speech_is_measured_without_leading_and_trailing_silence() -> None:
    x = _tone_in_silence(1.0, 1.5, 0.7)
    assert speech_seconds(frame_levels(x)) == pytest.approx(1.5, abs=0.04)
    start, end = speech_span(x)
    assert start == pytest.approx(SAMPLE_RATE, abs=320) and end == pytest.approx(2.5 * SAMPLE_RATE, abs=320)
    assert make_windows(x).speech_s == pytest.approx(1.5, abs=0.04)


def test_a_click_or_a_noise_burst_is_not_speech() -> None:
    x = _tone_in_silence(0.5, 1.0, 2.0)
    x[-SAMPLE_RATE // 2 : -SAMPLE_RATE // 2 + 200] = 0.5  # a 12 ms click 1.5 s after the speech
    assert speech_seconds(frame_levels(x)) == pytest.approx(1.0, abs=0.04)


def test_room_noise_around_the_speech_is_not_counted() -> None:
    x = _tone_in_silence(1.0, 1.2, 1.0, noise_dbfs=-45.0)
    assert speech_seconds(frame_levels(x)) == pytest.approx(1.2, abs=0.06)


def test_silence_has_no_speech() -> None:
    assert speech_seconds(frame_levels(np.zeros(SAMPLE_RATE, dtype=np.float32))) == 0.0
    assert speech_seconds(np.zeros(0)) == 0.0


def test_a_stream_measures_the_speech_an_upload_would(samples_dir: Path) -> None:
    wave = decode((samples_dir / "p225_002_mic1.flac").read_bytes()).waveform
    windower = StreamWindower(AudioOptions(), 16000)
    for chunk in np.array_split(wave, 37):
        windower.feed(chunk)
    assert windower.speech_s == pytest.approx(make_windows(wave).speech_s, abs=1e-9)


@pytest.mark.parametrize("name", ["p225_001_mic1", "p225_002_mic1", "voicememo"])
def test_transcodes_measure_the_speech_of_their_original(samples_dir: Path, name: str) -> None:
    """The floor must not depend on the codec: MP3, Opus, noise and 44.1 kHz copies agree within 0.05 s."""
    original = next(samples_dir.glob(f"{name}.*"))
    want = make_windows(decode(original.read_bytes()).waveform).speech_s
    for variant in ("44k1-stereo.wav", "mp3-64k.mp3", "noise-snr30.flac", "opus-24k.ogg"):
        got = make_windows(decode((samples_dir / "derived" / f"{name}_{variant}").read_bytes()).waveform)
        assert got.speech_s == pytest.approx(want, abs=0.05), variant


def test_quiet_speech_measures_as_much_speech_as_loud_speech() -> None:
    """Turning synthetic speech down 30 dB (the level attack) must not turn a verdict into INCONCLUSIVE."""
    loud = _tone_in_silence(0.5, 2.2, 0.5, noise_dbfs=-120.0)
    assert speech_seconds(frame_levels(loud * np.float32(10 ** (-30 / 20)))) == pytest.approx(
        speech_seconds(frame_levels(loud)), abs=0.02
    )


# ---------------------------------------------------------------- the plain-WAV fast path


def _wav_bytes(x: np.ndarray, rate: int, subtype: str, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_plain_wav_is_read_straight_from_the_bytes_exactly_as_libsndfile_reads_it(channels, subtype, rate):
    limits = decoding._Limits(0.25, 600.0)
    x = (np.random.default_rng(channels).standard_normal((rate * 2, channels)) * 0.2).astype(np.float32)
    for fmt in ("WAV", "WAVEX"):
        data = _wav_bytes(x, rate, subtype, fmt)
        for cut in (data, data[: len(data) // 2 + 3]):  # whole, and cut short mid-sample
            fast, reference = decoding._decode_plain_wav(cut, limits), decoding._decode_soundfile(cut, limits)
            assert fast is not None, (fmt, len(cut))
            np.testing.assert_array_equal(fast.mono, reference.mono)
            assert (fast.sample_rate, fast.channels, fast.container, fast.codec) == (
                reference.sample_rate,
                reference.channels,
                reference.container,
                reference.codec,
            )


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_24", "PCM_32", "DOUBLE", "ULAW"])
def test_other_wav_encodings_are_left_to_libsndfile(subtype):
    data = _wav_bytes(np.zeros(16000, np.float32) + 0.1, 16000, subtype)
    assert decoding._decode_plain_wav(data, decoding._Limits(0.25, 600.0)) is None
    assert decode(data).info.container == "wav"  # and still decoded, by libsndfile


def test_a_plain_wav_header_that_does_not_add_up_is_left_to_libsndfile():
    data = bytearray(_wav_bytes(np.zeros(16000, np.float32) + 0.1, 16000, "PCM_16"))
    limits = decoding._Limits(0.25, 600.0)
    broken_align = bytearray(data)
    broken_align[32:34] = (3).to_bytes(2, "little")  # block align 3 for one 16-bit channel
    assert decoding._decode_plain_wav(bytes(broken_align), limits) is None
    fmt_past_end = bytearray(data[:36])
    fmt_past_end[16:20] = (1000).to_bytes(4, "little")
    assert decoding._decode_plain_wav(bytes(fmt_past_end), limits) is None
    long_header = bytearray(data)  # the data chunk claims 700 s: only what is there is read
    long_header[40:44] = (700 * 32000).to_bytes(4, "little")
    assert len(decoding._decode_plain_wav(bytes(long_header), limits).mono) == 16000
    with pytest.raises(AudioError) as refused:  # past the limit by its real length: refused
        decoding._decode_plain_wav(bytes(data), decoding._Limits(0.25, 0.5))
    assert refused.value.code == "audio_too_long"
