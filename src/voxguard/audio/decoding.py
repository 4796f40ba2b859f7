"""Uploaded bytes -> 16 kHz mono float32 waveform, in memory only.

``soundfile`` (libsndfile) handles WAV, FLAC, OGG (Vorbis and Opus) and MP3; anything else goes through
PyAV (FFmpeg), restricted to a short list of audio-capable demuxers so that an upload cannot reach
FFmpeg's playlist/image/network demuxers. Plain 16-bit and float WAV, what most API clients send, is
read straight from the bytes. Length limits are enforced while decoding, so a tiny compressed file that
expands to hours is refused after at most ``max_duration_s`` of work.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf

from .errors import ACCEPTED_FORMATS, MAX_SOURCE_RATE, MIN_SOURCE_RATE, AudioError, ErrorCode
from .options import SAMPLE_RATE

logger = logging.getLogger(__name__)

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


def _kernel_fits(rate: int) -> bool:
    g = math.gcd(rate, SAMPLE_RATE)
    return (SAMPLE_RATE // g) * (rate // g) <= _MAX_RESAMPLE_KERNEL


def resamplable(rate: int) -> bool:
    """Whether audio at ``rate`` is accepted: within the source rates, and resampled at a sane cost."""
    return MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE and _kernel_fits(rate)


def _check_sample_rate(rate: int, limits: _Limits) -> None:
    """Refuse rates that would make resampling or the decoded buffer unreasonably large."""
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise limits.error("undecodable_audio", f"The sample rate {rate} Hz is not supported")
    if not _kernel_fits(rate):
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
