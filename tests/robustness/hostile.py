"""Hostile and broken inputs for the HTTP service, generated in memory at test time (never on disk).

Each :class:`Case` says how to send itself (multipart through httpx, a raw body, or a raw socket for
what httpx will not send) and what the server is expected to answer.
"""

from __future__ import annotations

import io
import select
import socket
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import soundfile as sf

OK = "ok"  # a 200 verdict is the expected answer


@dataclass
class Case:
    id: str
    # "multipart": ``files`` (httpx files list) and ``data``; "raw": ``body`` with ``content_type``;
    # "socket": ``send(port) -> (bytes_sent, raw_reply_or_None)``.
    kind: str
    expect_status: int | None = None  # None: any 4xx or 200 (documented below per case)
    expect_code: str | None = None
    files: list = field(default_factory=list)
    data: dict = field(default_factory=dict)
    body: bytes = b""
    content_type: str | None = None
    path: str = "/v1/predict"
    send: Callable[[int], tuple[int, bytes | None]] | None = None
    max_bytes_sent: int | None = None  # the answer must come before this much of the body was sent


# --- audio builders ---------------------------------------------------------------------------------


def encode(wave: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def riff_wav(
    *,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    fmt_tag: int = 1,
    data: bytes = b"",
    data_size: int | None = None,
    riff_size: int | None = None,
) -> bytes:
    """A hand-built RIFF/WAVE header (fields may be absurd) followed by ``data``."""
    block_align = (channels * bits // 8) & 0xFFFF
    byte_rate = (rate * block_align) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate & 0xFFFFFFFF, byte_rate, block_align, bits)
    size = len(data) if data_size is None else data_size
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    total = len(chunks) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", total & 0xFFFFFFFF) + chunks


def m4a(wave: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def video_only_mp4() -> bytes:
    """A few frames of 64x64 MPEG-4 video and no audio stream at all."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            img = np.full((64, 64, 3), i * 40, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def flac_bomb(seconds: float = 700.0, rate: int = 8000, unknown_length: bool = False) -> bytes:
    """Silence that compresses to a few KB and decodes to ``seconds`` of audio.

    ``unknown_length`` zeroes STREAMINFO's total-samples and MD5 (as a streamed encoder leaves them), so
    the header no longer reveals the length and it is only found out while decoding.
    """
    data = bytearray(encode(np.zeros(int(seconds * rate), dtype=np.int16), rate, "FLAC", "PCM_16"))
    if unknown_length:
        assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # first metadata block is STREAMINFO
        si = 8
        data[si + 13] &= 0xF0
        data[si + 14 : si + 18] = b"\0\0\0\0"
        data[si + 18 : si + 34] = bytes(16)
    return bytes(data)


def png() -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + bytes(4) for _ in range(4)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def zip_of(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, payload)
    return buf.getvalue()


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"hostileboundary7MA4YWxk") -> bytes:
    """A multipart body from (Content-Disposition value, data) pairs, byte for byte as given."""
    out = bytearray()
    for disposition, data in parts:
        out += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        out += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    out += b"--" + boundary + b"--\r\n"
    return bytes(out)


# --- raw-socket senders -----------------------------------------------------------------------------

REQUEST = b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n"


def _read_reply(s: socket.socket) -> bytes:
    """Everything up to the end of the first response (or the close); raises ``TimeoutError``."""
    reply = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return reply
        reply += chunk
        head, sep, body = reply.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:") and len(body) >= int(line.split(b":")[1]):
                    return reply


def chunked_over_limit(port: int, limit: int, chunk: int = 64 * 1024) -> tuple[int, bytes | None]:
    """Stream a chunked body of up to 4x ``limit``; the 413 must come back before it is all sent."""
    total = 4 * limit
    payload = f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(REQUEST + b"Content-Type: audio/wav\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        while sent < total:
            if select.select([s], [], [], 0)[0]:
                break  # the server has answered (or closed) before the body is complete
            try:
                s.sendall(payload)  # blocking: whole chunks only, so the framing stays valid
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += chunk
        return sent, _read_reply(s)


def short_body(port: int, patience_s: float = 1.0) -> tuple[int, bytes | None]:
    """Declare 100 kB, send 1 kB, wait ``patience_s``, then half-close: the server must answer or close."""
    body = b"RIFF" + bytes(1020)
    with socket.create_connection(("127.0.0.1", port), timeout=patience_s) as s:
        s.sendall(REQUEST + b"Content-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n" + body)
        try:
            return len(body), _read_reply(s)  # answered (or closed) while the body was still owed
        except TimeoutError:
            pass
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        return len(body), _read_reply(s)  # b"" is a clean close


def multipart_raw_socket(port: int, body: bytes, content_type: bytes) -> tuple[int, bytes | None]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = (
            REQUEST + b"Content-Type: " + content_type + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        s.sendall(head + body)
        return len(body), _read_reply(s)


# --- the cases --------------------------------------------------------------------------------------


def build_cases(samples_dir: Path, limit_bytes: int) -> list[Case]:
    """Every hostile input; generation takes well under two seconds."""
    t0 = time.monotonic()
    speech, rate = sf.read(samples_dir / "p225_001_mic1.flac", dtype="float32")
    assert rate == 16000
    flac = (samples_dir / "p225_001_mic1.flac").read_bytes()
    mp3 = (samples_dir / "derived/p225_001_mic1_mp3-64k.mp3").read_bytes()
    ogg = (samples_dir / "derived/p225_001_mic1_opus-24k.ogg").read_bytes()
    wav = encode(speech, 16000, "WAV", "PCM_16")
    aac = m4a(speech)
    rng = np.random.default_rng(7)
    noise = rng.bytes(4096)
    pcm16 = (speech * 32767).astype("<i2").tobytes()

    def resampled(to_rate: int) -> np.ndarray:
        idx = np.arange(int(len(speech) * to_rate / 16000)) * 16000 / to_rate
        return np.interp(idx, np.arange(len(speech)), speech).astype(np.float32)

    nan_wave = speech.copy()
    nan_wave[1000] = np.nan
    inf_wave = speech.copy()
    inf_wave[2000] = np.inf

    def up(name: str, data: bytes, ctype: str = "application/octet-stream", fld: str = "file") -> list:
        return [(fld, (name, data, ctype))]

    def mp(case_id, data, name="a.wav", status=None, code=None, **kw) -> Case:
        return Case(case_id, "multipart", status, code, files=up(name, data), **kw)

    bad = (415, "undecodable_audio")
    cases = [
        Case("empty_raw_body", "raw", 400, "empty_input", body=b"", content_type="audio/wav"),
        mp("empty_file_part", b"", "empty.wav", 400, "empty_input"),
        mp("one_byte", b"R", "one.wav", *bad),
        mp("random_bytes_as_wav", noise, "noise.wav", *bad),
        mp("random_bytes_as_mp3", noise, "noise.mp3", *bad),
        mp("truncated_wav_half", wav[: len(wav) // 2], "half.wav", 200),
        mp("truncated_wav_header_only", wav[:44], "header.wav", 422, "audio_too_short"),
        mp("truncated_flac_half", flac[: len(flac) // 2], "half.flac", 200),
        mp("truncated_flac_header_only", flac[:200], "header.flac"),
        mp("truncated_mp3_half", mp3[: len(mp3) // 2], "half.mp3", 200),
        mp("truncated_ogg_opus_half", ogg[: len(ogg) // 2], "half.ogg"),
        mp("truncated_ogg_opus_90pct", ogg[: len(ogg) * 9 // 10], "most.ogg", 200),
        mp("truncated_m4a_half", aac[: len(aac) // 2], "half.m4a"),
        mp("truncated_m4a_header_only", aac[:64], "header.m4a"),
        mp("wav_data_size_ffffffff", riff_wav(data=pcm16, data_size=0xFFFFFFFF), "huge.wav"),
        mp("wav_riff_size_ffffffff", riff_wav(data=pcm16, riff_size=0xFFFFFFFF), "riff.wav", 200),
        mp("wav_65535_channels", riff_wav(channels=65535, data=pcm16), "ch.wav", *bad),
        mp("wav_0_channels", riff_wav(channels=0, data=pcm16), "ch0.wav", *bad),
        mp("wav_rate_0", riff_wav(rate=0, data=pcm16), "r0.wav", *bad),
        mp("wav_rate_1", riff_wav(rate=1, data=pcm16), "r1.wav", *bad),
        mp("wav_rate_4e9", riff_wav(rate=4_000_000_000, data=pcm16), "r4e9.wav", *bad),
        mp("wav_rate_44099_unresamplable", encode(resampled(44099), 44099), "r.wav", *bad),
        mp("wav_bits_0", riff_wav(bits=0, data=pcm16), "b0.wav", *bad),
        mp("wav_format_tag_0xdead", riff_wav(fmt_tag=0xDEAD, data=pcm16), "tag.wav", *bad),
        mp("wav_0_frames", riff_wav(data=b""), "zero.wav", 422, "audio_too_short"),
        mp("wav_header_says_700s", riff_wav(data=pcm16, data_size=700 * 32000), "long.wav"),
        mp("wav_u8", encode(speech, 16000, "WAV", "PCM_U8"), "u8.wav", 200),
        mp("wav_24bit", encode(speech, 16000, "WAV", "PCM_24"), "s24.wav", 200),
        mp("wav_float32", encode(speech, 16000, "WAV", "FLOAT"), "f32.wav", 200),
        mp("wav_float64", encode(speech.astype(np.float64), 16000, "WAV", "DOUBLE"), "f64.wav", 200),
        mp("wav_float_nan", encode(nan_wave, 16000, "WAV", "FLOAT"), "nan.wav", 422, "invalid_samples"),
        mp("wav_float_inf", encode(inf_wave, 16000, "WAV", "FLOAT"), "inf.wav", 422, "invalid_samples"),
        mp("wav_1ms", encode(speech[8000:8016], 16000), "1ms.wav", 422, "audio_too_short"),
        mp("wav_96khz", encode(resampled(96000), 96000, "WAV", "PCM_16"), "96k.wav", 200),
        mp("wav_8khz_1s", encode(resampled(8000)[:8000], 8000, "WAV", "PCM_16"), "8k.wav", 200),
        mp("wav_6_channels", encode(np.tile(speech[:, None], (1, 6)), 16000), "6ch.wav", 200),
        mp("wav_digital_silence", encode(np.zeros(16000, np.float32), 16000), "s.wav", 422, "no_speech"),
        mp("flac_bomb_700s_header", flac_bomb(), "bomb.flac", 413, "audio_too_long"),
        mp(
            "flac_bomb_700s_unknown_length",
            flac_bomb(unknown_length=True),
            "bomb2.flac",
            413,
            "audio_too_long",
        ),
        mp("mp4_video_no_audio", video_only_mp4(), "video.mp4", 415, "no_audio_stream"),
        mp("png_named_wav", png(), "image.wav", *bad),
        mp("zip_of_wav", zip_of("speech.wav", wav), "speech.zip", *bad),
        Case(
            "multipart_65_parts",
            "multipart",
            413,
            "too_many_parts",
            files=[("file", (f"p{i}.wav", b"x", "audio/wav")) for i in range(65)],
        ),
        Case(
            "multipart_misnamed_field",
            "multipart",
            422,
            "missing_file_field",
            files=up("a.wav", wav, fld="audio"),
        ),
        Case(
            "multipart_no_file_field",
            "raw",
            422,
            "missing_file_field",
            body=multipart([(b'form-data; name="model"', b"aasist")]),
            content_type="multipart/form-data; boundary=hostileboundary7MA4YWxk",
        ),
        Case(
            "multipart_path_traversal_filename",
            "multipart",
            200,
            files=up("../../etc/passwd.wav", wav, "audio/wav"),
        ),
        Case(
            "multipart_non_utf8_filename",
            "raw",
            200,
            body=multipart([(b'form-data; name="file"; filename="\xff\xfe../\x00x.wav"', wav)]),
            content_type="multipart/form-data; boundary=hostileboundary7MA4YWxk",
        ),
        Case(
            "multipart_non_utf8_field_name",
            "raw",
            422,
            "missing_file_field",
            body=multipart([(b'form-data; name="\xff\xfe"; filename="a.wav"', wav)]),
            content_type="multipart/form-data; boundary=hostileboundary7MA4YWxk",
        ),
        Case(
            "multipart_part_type_image_png",
            "multipart",
            200,
            files=up("a.png", wav, "image/png"),
        ),
        Case(
            "multipart_broken_boundary",
            "raw",
            None,
            body=multipart([(b'form-data; name="file"; filename="a.wav"', wav)], boundary=b"other"),
            content_type="multipart/form-data; boundary=hostileboundary7MA4YWxk",
        ),
        Case(
            "multipart_truncated_body",
            "raw",
            None,
            body=multipart([(b'form-data; name="file"; filename="a.wav"', wav)])[:-300],
            content_type="multipart/form-data; boundary=hostileboundary7MA4YWxk",
        ),
        Case(
            "multipart_without_boundary",
            "raw",
            400,
            "invalid_multipart",
            body=multipart([(b'form-data; name="file"; filename="a.wav"', wav)]),
            content_type="multipart/form-data",
        ),
        Case(
            "multipart_garbage_body",
            "raw",
            None,
            body=noise,
            content_type="multipart/form-data; boundary=hostileboundary7MA4YWxk",
        ),
        Case(
            "content_type_text_plain",
            "raw",
            415,
            "unsupported_media_type",
            body=wav,
            content_type="text/plain",
        ),
        Case(
            "content_type_application_json",
            "raw",
            415,
            "unsupported_media_type",
            body=b'{"file": "a.wav"}',
            content_type="application/json",
        ),
        Case(
            "content_type_image_png", "raw", 415, "unsupported_media_type", body=wav, content_type="image/png"
        ),
        Case("content_type_missing", "raw", 415, "unsupported_media_type", body=wav, content_type=None),
        Case("raw_audio_wav_body", "raw", 200, body=wav, content_type="audio/wav"),
        Case("raw_audio_mpeg_with_flac_body", "raw", 200, body=flac, content_type="audio/mpeg"),
        Case(
            "raw_over_limit",
            "raw",
            413,
            "upload_too_large",
            body=bytes(limit_bytes + 1),
            content_type="audio/wav",
        ),
        mp("multipart_over_limit", bytes(limit_bytes), "big.wav", 413, "upload_too_large"),
        Case(
            "chunked_over_limit",
            "socket",
            413,
            "upload_too_large",
            send=lambda port: chunked_over_limit(port, limit_bytes),
            max_bytes_sent=4 * limit_bytes,
        ),
        Case("content_length_larger_than_body", "socket", None, send=short_body),
        Case(
            "batch_of_hostile_files",
            "multipart",
            200,
            path="/v1/predict/batch",
            files=[
                ("files", ("noise.mp3", noise, "audio/mpeg")),
                ("files", ("", b"", "audio/wav")),
                ("files", ("bomb.flac", flac_bomb(), "audio/flac")),
                ("files", ("ok.wav", wav, "audio/wav")),
            ],
        ),
        Case(
            "seed_route_png", "multipart", 415, "undecodable_audio", path="/predict", files=up("x.wav", png())
        ),
        Case(
            "unknown_model_query",
            "multipart",
            400,
            "unknown_model",
            path="/v1/predict?model=../../x",
            files=up("a.wav", wav),
        ),
    ]
    assert len({c.id for c in cases}) == len(cases)
    assert time.monotonic() - t0 < 10
    return cases
