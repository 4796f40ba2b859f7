"""Uploaded bytes -> 16 kHz mono float32 waveform -> the fixed-length windows AASIST scores.

Knows nothing about HTTP or the model. Everything that can go wrong with the caller's audio is raised as
:class:`AudioError` with a stable ``code`` so the API layer can map it to a response without parsing text.

Decoding is in memory only. ``soundfile`` (libsndfile) handles WAV, FLAC, OGG (Vorbis and Opus) and MP3;
anything else goes through PyAV (FFmpeg), restricted to a short list of audio-capable demuxers so that an
upload cannot reach FFmpeg's playlist/image/network demuxers. Length limits are enforced while decoding,
so a tiny compressed file that expands to hours is refused after at most ``max_duration_s`` of work.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW = 64600  # AASIST input length (~4.04 s at 16 kHz)
DEFAULT_HOP = 32000

ACCEPTED_FORMATS = "WAV, FLAC, MP3, OGG/Vorbis, OGG/Opus, M4A/AAC, WebM/Opus"
MIN_SOURCE_RATE = 4000
MAX_SOURCE_RATE = 192000

ErrorCode = Literal[
    "empty_input",
    "undecodable_audio",
    "no_audio_stream",
    "audio_too_short",
    "audio_too_long",
    "invalid_samples",
    "no_speech",
]

# libsndfile containers we accept; others it happens to parse fall through to PyAV's whitelist.
_SF_CONTAINERS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}
_SF_CODECS = {
    "FLOAT": "pcm_float",
    "DOUBLE": "pcm_double",
    "MPEG_LAYER_I": "mp1",
    "MPEG_LAYER_II": "mp2",
    "MPEG_LAYER_III": "mp3",
}
# libsndfile reports SF_COUNT_MAX frames when the header has no length (e.g. streamed FLAC); soundfile
# then fails to seek between reads, so such files are counted by PyAV instead.
_SF_UNKNOWN_LENGTH = 2**63 - 1
# FFmpeg demuxers an upload may reach. Everything else (hls, concat, image2, ...) is refused at probe time.
_AV_FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,ogg,mp3,aac,flac,wav"
_AV_CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska"}
# Samples (all channels) per soundfile read, so a block stays ~1 MiB whatever the channel count.
_BLOCK_SAMPLES = 1 << 18
# torchaudio builds a (new/g) x (orig/g + 2*width) float64 kernel; rates such as 44099 Hz would need
# gigabytes, so rates whose kernel exceeds this many elements are refused.
_MAX_RESAMPLE_KERNEL = 1 << 22
# Digital silence has RMS 0; flooring it at -200 dBFS keeps its level a finite (JSON-safe) number.
_RMS_FLOOR = 1e-10
# Speech activity (for the "too short to judge" floor) is measured on 20 ms frames: a frame is loud enough
# for speech within SPEECH_RANGE_DB of the loudest frame and SPEECH_ABOVE_NOISE_DB above the noise (the
# 10th percentile of the frame levels; in audio that is all speech that percentile is speech too, so the
# cut never rises above SPEECH_NOISE_CAP_DB below the loudest), and only runs of SPEECH_MIN_FRAMES such
# frames count, so a click or a noise burst is not speech. On the shared recordings this measures most
# transcodes within 0.05 s of their original (docs/evaluation.md).
SPEECH_FRAME = 320
# Only digital silence is ruled out absolutely: speech turned down 30 dB (the level attack) still counts.
SPEECH_FLOOR_DBFS = -90.0
SPEECH_RANGE_DB = 30.0
SPEECH_ABOVE_NOISE_DB = 10.0
SPEECH_NOISE_CAP_DB = 20.0
SPEECH_MIN_FRAMES = 3


class AudioError(Exception):
    """The audio was rejected. ``code`` is stable for machines, ``detail`` says what was wrong and what is
    accepted, for the person who sent it."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: str = code
        self.detail: str = detail


@dataclass(frozen=True)
class AudioInfo:
    """What the upload was, before downmixing and resampling (for logs and responses)."""

    sample_rate: int
    channels: int
    duration_s: float
    container: str
    codec: str


@dataclass(frozen=True)
class DecodedAudio:
    """``waveform`` is float32, mono, 16 kHz, 1-D: the only form the rest of the pipeline handles."""

    waveform: np.ndarray
    info: AudioInfo


@dataclass(frozen=True)
class WindowSet:
    """Model input rows plus, per row, where it came from and how loud it was; ``speech_s`` is how much
    speech the audio holds (see :func:`speech_span`), which decides whether a verdict is possible."""

    batch: np.ndarray
    spans: list[tuple[float, float]]
    silent: list[bool]
    rms_dbfs: list[float]
    speech_s: float


@dataclass(frozen=True)
class _Limits:
    min_s: float
    max_s: float

    def error(self, code: ErrorCode, problem: str) -> AudioError:
        return AudioError(
            code,
            f"{problem}. Accepted: {ACCEPTED_FORMATS} audio, {self.min_s:g} s to {self.max_s:g} s long, "
            f"sampled at {MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} Hz.",
        )

    def max_frames(self, rate: int) -> int:
        return math.floor(self.max_s * rate)

    def too_long(self) -> AudioError:
        return self.error("audio_too_long", f"The audio is longer than {self.max_s:g} s")


@dataclass(frozen=True)
class _Raw:
    """Decoded audio at its original rate, already downmixed."""

    mono: np.ndarray
    sample_rate: int
    channels: int
    container: str
    codec: str


def decode(data: bytes, *, min_duration_s: float = 0.25, max_duration_s: float = 600.0) -> DecodedAudio:
    """Decode an uploaded file to 16 kHz mono float32, refusing anything outside the limits.

    Zero decoded frames is ``audio_too_short`` (``empty_input`` means zero bytes). Truncated files decode
    to whatever complete audio they hold, as FFmpeg and libsndfile both do.
    """
    if not 0 <= min_duration_s < max_duration_s:
        raise ValueError(f"need 0 <= min_duration_s < max_duration_s, got {min_duration_s}, {max_duration_s}")
    limits = _Limits(min_duration_s, max_duration_s)
    if not data:
        raise limits.error("empty_input", "The upload is empty (0 bytes)")

    raw = _decode_plain_wav(data, limits) or _decode_soundfile(data, limits) or _decode_pyav(data, limits)
    n = raw.mono.shape[0]
    if n == 0:
        raise limits.error("audio_too_short", "The file contains no audio samples")
    if not np.isfinite(raw.mono).all():
        raise limits.error("invalid_samples", "The audio contains NaN or infinite sample values")
    duration_s = n / raw.sample_rate
    if duration_s < min_duration_s:
        raise limits.error("audio_too_short", f"The audio is {duration_s:.3f} s long")

    waveform = raw.mono
    if raw.sample_rate != SAMPLE_RATE:
        waveform = taf.resample(torch.from_numpy(waveform), raw.sample_rate, SAMPLE_RATE).numpy()
    info = AudioInfo(raw.sample_rate, raw.channels, duration_s, raw.container, raw.codec)
    logger.debug(
        "decoded %s/%s: %d Hz, %d ch, %.3f s -> %d samples at %d Hz",
        info.container,
        info.codec,
        info.sample_rate,
        info.channels,
        info.duration_s,
        waveform.shape[0],
        SAMPLE_RATE,
    )
    return DecodedAudio(np.ascontiguousarray(waveform, dtype=np.float32), info)


def _check_sample_rate(rate: int, limits: _Limits) -> None:
    """Refuse rates that would make resampling or the decoded buffer unreasonably large."""
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise limits.error("undecodable_audio", f"The sample rate {rate} Hz is not supported")
    g = math.gcd(rate, SAMPLE_RATE)
    if (SAMPLE_RATE // g) * (rate // g) > _MAX_RESAMPLE_KERNEL:
        raise limits.error(
            "undecodable_audio", f"The sample rate {rate} Hz is not a standard rate and cannot be resampled"
        )


def _concat(blocks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


# Plain WAV that the fast path reads itself: (format tag, bits) -> (sample dtype, scale to [-1, 1]), as
# libsndfile converts them (exact: the scales are powers of two). Everything else goes to libsndfile.
_PLAIN_WAV = {(1, 16): ("<i2", 2.0**-15), (3, 32): ("<f4", 1.0)}
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The tail that every KSDATAFORMAT_SUBTYPE GUID of a plain format shares (its first two bytes are the tag).
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def _decode_plain_wav(data: bytes, limits: _Limits) -> _Raw | None:
    """16-bit PCM and 32-bit float WAV read straight from the bytes; ``None`` for anything else.

    Most API clients send exactly these, and libsndfile reads memory through Python callbacks that cost
    more than the decoding itself; here the samples are one ``np.frombuffer`` view. The result equals
    libsndfile's. A header that does not add up (chunks past the end, a block size that does not match,
    an unknown format) is left to libsndfile, which has the checks and the error messages. A data chunk
    that claims more bytes than the upload has is read as far as it goes, as libsndfile does.
    """
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    fmt, pos = None, 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt ":
            if size < 16 or body + size > len(data):
                return None
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _WAVE_FORMAT_EXTENSIBLE:
                if size < 40 or data[body + 26 : body + 40] != _GUID_TAIL:
                    return None
                tag = int.from_bytes(data[body + 24 : body + 26], "little")
            fmt = (tag, channels, rate, align, bits)
        elif chunk == b"data":
            return None if fmt is None else _plain_samples(data[body : body + size], *fmt, limits)
        pos = body + size + (size & 1)  # chunks are word-aligned
    return None


def _plain_samples(
    payload: bytes, tag: int, channels: int, rate: int, align: int, bits: int, limits: _Limits
) -> _Raw | None:
    kind = _PLAIN_WAV.get((tag, bits))
    if kind is None or channels < 1 or align != channels * bits // 8:
        return None
    _check_sample_rate(rate, limits)
    frames = len(payload) // align
    if frames > limits.max_frames(rate):
        raise limits.too_long()
    dtype, scale = kind
    samples = np.frombuffer(payload, dtype=dtype, count=frames * channels).reshape(frames, channels)
    mono = samples[:, 0].astype(np.float32) if channels == 1 else None
    if mono is None:
        mono = (
            (samples.astype(np.float32) * np.float32(scale)).mean(axis=1, dtype=np.float64).astype(np.float32)
        )
    elif scale != 1.0:
        mono *= np.float32(scale)
    codec = "pcm_16" if bits == 16 else "pcm_float"
    return _Raw(mono, rate, channels, "wav", codec)


def _decode_soundfile(data: bytes, limits: _Limits) -> _Raw | None:
    """libsndfile path; ``None`` means "not for libsndfile", so the caller tries PyAV."""
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except sf.SoundFileError:
        return None
    with f:
        if f.format not in _SF_CONTAINERS or f.frames >= _SF_UNKNOWN_LENGTH:
            return None
        rate, channels = f.samplerate, f.channels
        _check_sample_rate(rate, limits)
        max_frames = limits.max_frames(rate)
        if f.frames > max_frames:  # refused from the header alone, before reading anything
            raise limits.too_long()
        block_frames = max(1, _BLOCK_SAMPLES // channels)
        blocks: list[np.ndarray] = []
        total = 0
        try:
            while True:
                block = f.read(block_frames, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                total += block.shape[0]
                # soundfile stops at the header's count today; this keeps memory bounded if it ever does not
                if total > max_frames:
                    raise limits.too_long()
                blocks.append(block.mean(axis=1, dtype=np.float64).astype(np.float32))
        except sf.SoundFileError:
            logger.debug("libsndfile failed mid-stream on %s; retrying with PyAV", f.format, exc_info=True)
            return None
        container = _SF_CONTAINERS[f.format]
        codec = "flac" if container == "flac" else _SF_CODECS.get(f.subtype, f.subtype.lower())
    return _Raw(_concat(blocks), rate, channels, container, codec)


def _decode_pyav(data: bytes, limits: _Limits) -> _Raw:
    """FFmpeg path for what libsndfile cannot read (M4A/AAC, WebM/Opus, Matroska, ...)."""
    try:
        container = av.open(io.BytesIO(data), options={"format_whitelist": _AV_FORMAT_WHITELIST})
    except av.FFmpegError as exc:
        raise limits.error("undecodable_audio", "The file is not in a recognised audio format") from exc
    with container:
        if not container.streams.audio:
            raise limits.error("no_audio_stream", "The file contains no audio stream")
        stream = container.streams.audio[0]
        fmt = container.format.name
        name = _AV_CONTAINERS.get(fmt, fmt.split(",")[0])
        if name == "matroska" and b"webm" in data[:64]:  # the EBML DocType sits in the first bytes
            name = "webm"
        if stream.codec_context is None:  # e.g. a WAV with an unknown format tag: FFmpeg has no decoder
            raise limits.error("undecodable_audio", f"The {name} audio uses a codec that cannot be decoded")
        codec = stream.codec_context.codec.canonical_name
        resampler: av.AudioResampler | None = None
        rate = channels = max_frames = total = 0
        blocks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    rate, channels = frame.sample_rate, frame.layout.nb_channels
                    _check_sample_rate(rate, limits)
                    max_frames = limits.max_frames(rate)
                    # Only converts the sample format to float; rate and layout stay as decoded.
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=rate)
                for out in resampler.resample(frame):
                    planes = out.to_ndarray()
                    total += planes.shape[1]
                    if total > max_frames:
                        raise limits.too_long()
                    blocks.append(planes.mean(axis=0, dtype=np.float64).astype(np.float32))
        except av.FFmpegError as exc:
            if not blocks:
                raise limits.error(
                    "undecodable_audio", f"The {name} audio stream could not be decoded"
                ) from exc
            # A truncated file: keep the complete frames before the damage, as libsndfile does for WAV.
            logger.debug("%s stream damaged after %d frames; keeping those", name, total, exc_info=True)
    return _Raw(_concat(blocks), rate, channels, name, codec)


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


def frame_levels(x: np.ndarray) -> np.ndarray:
    """Mean-square level of each 20 ms frame in dBFS (a last partial frame counts as a frame).

    Float32 sums of squares (a view, no copy): a per-request cost, and levels need no more precision."""
    x = np.asarray(x, dtype=np.float32)
    whole = len(x) // SPEECH_FRAME
    frames = x[: whole * SPEECH_FRAME].reshape(whole, SPEECH_FRAME)
    power = np.einsum("ij,ij->i", frames, frames)
    if len(x) > whole * SPEECH_FRAME:
        tail = x[whole * SPEECH_FRAME :]
        power = np.append(power, np.dot(tail, tail))
    return 10.0 * np.log10(np.maximum(power / SPEECH_FRAME, _RMS_FLOOR**2))


def speech_seconds(levels: np.ndarray) -> float:
    """Seconds from the first to the last speech frame (see ``SPEECH_FRAME``). Pauses between words count;
    leading and trailing silence or room noise does not, so a clip's length is not mistaken for how
    much speech the model can hear."""
    start, end = speech_frames(levels)
    return (end - start) * SPEECH_FRAME / SAMPLE_RATE


def speech_frames(levels: np.ndarray) -> tuple[int, int]:
    """``[start, end)`` frame indices of the speech in ``levels`` (``(0, 0)`` when there is none)."""
    if not len(levels):
        return 0, 0
    loudest = float(levels.max())
    tenth = (len(levels) - 1) // 10  # the 10th percentile's rank (np.percentile costs 50x more per call)
    noise = float(np.partition(levels, tenth)[tenth])
    cut = max(
        SPEECH_FLOOR_DBFS,
        loudest - SPEECH_RANGE_DB,
        min(noise + SPEECH_ABOVE_NOISE_DB, loudest - SPEECH_NOISE_CAP_DB),
    )
    loud = np.concatenate([[False], levels >= cut, [False]])
    edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= SPEECH_MIN_FRAMES]
    return (int(runs[0][0]), int(runs[-1][1])) if runs else (0, 0)


def speech_span(x: np.ndarray) -> tuple[int, int]:
    """``[start, end)`` sample indices of the speech in ``x`` (see :func:`speech_seconds`)."""
    start, end = speech_frames(frame_levels(x))
    return start * SPEECH_FRAME, min(len(x), end * SPEECH_FRAME)


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
    level = 10.0 * np.log10(np.maximum(power, _RMS_FLOOR**2))
    if preprocess == "reference":
        return raw, [False] * len(raw), level.tolist()
    gain = (10.0 ** (np.minimum(target_rms_dbfs - level, max_gain_db) / 20.0)).astype(np.float32)
    return raw * gain[:, None], (level < silence_floor_dbfs).tolist(), level.tolist()


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


def prepare(data: bytes, options: AudioOptions) -> tuple[DecodedAudio, WindowSet]:
    """Bytes to model-ready windows: the whole CPU side of a request, in one call for a worker pool."""
    audio = decode(data, min_duration_s=options.min_duration_s, max_duration_s=options.max_duration_s)
    windows = make_windows(
        audio.waveform,
        hop=options.hop,
        preprocess=options.preprocess,
        target_rms_dbfs=options.target_rms_dbfs,
        max_gain_db=options.max_gain_db,
        silence_floor_dbfs=options.silence_floor_dbfs,
    )
    return audio, windows


class StreamWindower:
    """Cuts a live 16 kHz stream into the same windows :func:`make_windows` would cut from the whole.

    Windows start every ``hop`` samples from 0; :meth:`finish` adds the tail window that ends at the
    last sample (or, for a stream shorter than one window, the tiled window), so a finished stream
    yields exactly the windows of the complete recording. Only ``WINDOW`` samples plus one chunk are
    kept in memory, whatever the stream's length.
    """

    def __init__(self, options: AudioOptions, hop: int) -> None:
        if hop < 1:
            raise ValueError(f"hop must be positive, got {hop}")
        self.options = options
        self.hop = hop
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # absolute index of _buffer[0]
        self._next = 0  # absolute start of the next window
        self._emitted_end = 0
        self.total = 0
        self._levels: list[np.ndarray] = []  # per 20 ms frame, for speech_s
        self._unframed = np.zeros(0, dtype=np.float32)

    @property
    def speech_s(self) -> float:
        """Seconds of speech so far, measured as :func:`make_windows` measures a whole recording."""
        levels = [*self._levels, frame_levels(self._unframed)] if len(self._unframed) else self._levels
        return speech_seconds(np.concatenate(levels) if levels else np.zeros(0))

    def feed(self, samples: np.ndarray) -> WindowSet | None:
        """Add samples; returns the windows they completed (``None`` when none did)."""
        samples = np.asarray(samples, dtype=np.float32).ravel()
        self._buffer = np.concatenate([self._buffer, samples])
        self.total += len(samples)
        unframed = np.concatenate([self._unframed, samples])
        whole = len(unframed) // SPEECH_FRAME * SPEECH_FRAME
        if whole:
            self._levels.append(frame_levels(unframed[:whole]))
        self._unframed = unframed[whole:]
        starts = []
        while self._next + WINDOW <= self.total:
            starts.append(self._next)
            self._next += self.hop
        windows = self._cut(starts) if starts else None
        # Keep what the next window and a possible tail window (ending at the last sample) need.
        drop = min(self._next, self.total - WINDOW) - self._offset
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._offset += drop
        return windows

    def finish(self) -> WindowSet | None:
        """The last window: ending at the last sample, or the tiled short stream; ``None`` if covered."""
        if self.total == 0:
            return None
        if self.total < WINDOW:
            o = self.options
            return make_windows(
                self._buffer,
                preprocess=o.preprocess,
                target_rms_dbfs=o.target_rms_dbfs,
                max_gain_db=o.max_gain_db,
                silence_floor_dbfs=o.silence_floor_dbfs,
            )
        if self._emitted_end == self.total:
            return None
        return self._cut([self.total - WINDOW])

    def _cut(self, starts: list[int]) -> WindowSet:
        raw = np.stack([self._buffer[s - self._offset : s - self._offset + WINDOW] for s in starts])
        o = self.options
        batch, silent, level = _preprocess(
            raw, o.preprocess, o.target_rms_dbfs, o.max_gain_db, o.silence_floor_dbfs
        )
        self._emitted_end = starts[-1] + WINDOW
        spans = [(s / SAMPLE_RATE, (s + WINDOW) / SAMPLE_RATE) for s in starts]
        return WindowSet(batch, spans, silent, level, self.speech_s)


class StreamResampler:
    """Resamples a live stream to 16 kHz in chunks, matching a whole-signal resample to float precision.

    Each step resamples only the new input plus a margin wider than the sinc kernel, starting on an
    input index where the input and output sample grids meet, and emits only outputs whose kernel
    lies entirely inside what has arrived; :meth:`flush` emits the rest.
    """

    def __init__(self, rate: int) -> None:
        if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE or (
            (SAMPLE_RATE // math.gcd(rate, SAMPLE_RATE)) * (rate // math.gcd(rate, SAMPLE_RATE))
            > _MAX_RESAMPLE_KERNEL
        ):
            raise ValueError(f"cannot resample a stream from {rate} Hz")
        self.rate = rate
        self._step_in = rate // math.gcd(rate, SAMPLE_RATE)  # input samples between aligned grid points
        self._margin = self._step_in * math.ceil(256 / self._step_in)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0
        self._total_in = 0
        self._done_out = 0

    def feed(self, samples: np.ndarray) -> np.ndarray:
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float32).ravel()])
        self._total_in += len(samples)
        ready = max(0, (self._total_in - self._margin) * SAMPLE_RATE // self.rate)
        return self._emit(ready)

    def flush(self) -> np.ndarray:
        return self._emit(math.ceil(self._total_in * SAMPLE_RATE / self.rate))

    def _emit(self, until: int) -> np.ndarray:
        if until <= self._done_out:
            return np.zeros(0, dtype=np.float32)
        start = self._aligned_start(self._done_out)
        segment = torch.from_numpy(self._buffer[start - self._buffer_start :].copy())
        out = taf.resample(segment, self.rate, SAMPLE_RATE).numpy()
        base = start * SAMPLE_RATE // self.rate
        result = out[self._done_out - base : until - base]
        self._done_out = until
        keep = self._aligned_start(until)
        self._buffer = self._buffer[keep - self._buffer_start :]
        self._buffer_start = keep
        return result

    def _aligned_start(self, output_index: int) -> int:
        """An input index on the shared grid, a margin before the input that ``output_index`` needs."""
        needed = output_index * self.rate // SAMPLE_RATE - self._margin
        return max(0, needed // self._step_in * self._step_in)
