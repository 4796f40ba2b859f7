"""Verdicts on the audio people actually send: short clips, partly synthetic recordings, long calls.

End to end through real servers on loopback (and the CLI), with recordings built in the test from the
shared samples and espeak-ng speech, as docs/evaluation.md describes.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

from servers import live_server
from synthetic_speech import espeak_ng
from voxguard.audio.decoding import decode
from voxguard.audio.options import SAMPLE_RATE, AudioOptions
from voxguard.audio.speech import speech_span
from voxguard.audio.windows import prepare
from voxguard.client import Client
from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE
from voxguard.settings import Settings

RECORDINGS = ("p225_001_mic1.flac", "p225_002_mic1.flac", "voicememo.mp3", "p225_002_mic2.flac")


def flac(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1, 1), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def level(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.fixture(scope="module")
def detectors(detector_factory) -> dict:
    return {"aasist": detector_factory("aasist", "fast")}


@pytest.fixture(scope="module")
def real_speech(samples_dir) -> np.ndarray:
    """About 13 s of real speech: shared recordings end to end, as a long call would hold them."""
    clips = [decode((samples_dir / name).read_bytes()).waveform for name in RECORDINGS]
    return np.concatenate(clips + clips[:1])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> np.ndarray:
    """About 5 s of espeak-ng speech at 16 kHz, leading and trailing silence trimmed."""
    wav = espeak_ng(
        "Your account has been locked. Please confirm your identity by reading the code aloud.",
        tmp_path_factory.mktemp("tts") / "tts.wav",
    )
    audio = decode(wav.read_bytes()).waveform
    start, end = speech_span(audio)
    return audio[start:end]


@pytest.fixture(scope="module")
def spliced(real_speech, synthetic) -> tuple[bytes, tuple[float, float]]:
    """The real speech with the synthetic sentence spliced onto the end at the same level."""
    fake = synthetic * np.float32(level(real_speech) / level(synthetic))
    start = len(real_speech) / SAMPLE_RATE
    return flac(np.concatenate([real_speech, fake])), (start, start + len(fake) / SAMPLE_RATE)


def test_defaults_are_the_measured_rule():
    """docs/evaluation.md derives these from scripts/verdict_study.py; change them with a new measurement."""
    rule = Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE)
    assert (rule.min_reliable_s, rule.offset, rule.min_windows, rule.threshold) == (2.0, 6.0, 1, 0.5)


def test_spliced_recording_is_fake_with_a_segment_over_the_splice(detectors, spliced, real_speech):
    data, (lo, hi) = spliced
    with live_server(detectors) as srv:
        body = httpx.post(f"{srv.url}/v1/predict", files={"file": ("spliced.flac", data)}, timeout=120).json()
        real = httpx.post(
            f"{srv.url}/v1/predict", files={"file": ("real.flac", flac(real_speech))}, timeout=120
        ).json()
    assert body["prediction"] == "FAKE", body
    assert body["is_fake"] is True and body["confidence"] == pytest.approx(body["fake_probability"])
    assert body["segments"], body
    covered = [s for s in body["segments"] if s["start_s"] < hi and s["end_s"] > lo]
    assert covered, (body["segments"], lo, hi)
    assert all(s["end_s"] > lo for s in body["segments"])  # nothing flagged in the real part alone
    assert real["prediction"] == "REAL" and real["segments"] == [], real
    assert body["leaning"] is body["leaning_fake_probability"] is real["leaning"] is None


def test_cli_json_and_table_report_segments_and_inconclusive(tmp_path, spliced, samples_dir, checkpoint_dir):
    (tmp_path / "spliced.flac").write_bytes(spliced[0])
    short = decode((samples_dir / "p225_002_mic1.flac").read_bytes()).waveform[16000:32000]
    (tmp_path / "short.flac").write_bytes(flac(short))
    files = [str(tmp_path / "spliced.flac"), str(tmp_path / "short.flac")]
    command = [sys.executable, "-m", "voxguard.cli", "predict", "--checkpoint-dir", str(checkpoint_dir)]
    proc = subprocess.run([*command, "--json", *files], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    spliced_row, short_row = (json.loads(line) for line in proc.stdout.splitlines())
    assert spliced_row["prediction"] == "FAKE" and spliced_row["segments"]
    assert short_row["prediction"] == "INCONCLUSIVE" and short_row["is_fake"] is None
    assert re.fullmatch(r"too short to judge: 0\.\d s of speech, at least 2 s needed", short_row["reason"])
    table = subprocess.run([*command, *files], capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "INCONCLUSIVE" in table.stdout and "too short to judge" in table.stdout
    assert "synthetic speech from" in table.stdout


def test_short_speech_is_inconclusive_everywhere(detectors, samples_dir):
    clip = decode((samples_dir / "p225_001_mic1.flac").read_bytes()).waveform[:8000]  # the first 0.5 s
    data = flac(clip)
    with live_server(detectors) as srv:
        v1 = httpx.post(f"{srv.url}/v1/predict", files={"file": ("clip.flac", data)}, timeout=60)
        with Client(srv.url) as client:
            parsed = client.predict(data, filename="clip.flac")
        legacy = httpx.post(f"{srv.url}/predict", files={"file": ("clip.flac", data)}, timeout=60)
        samples = (np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes()
        ws_url = srv.url.replace("http", "ws") + "/v1/stream"
        with connect(ws_url) as ws:
            ws.send(samples)
            ws.send(json.dumps({"type": "end"}))
            messages = [json.loads(m) for m in ws]
    body = v1.json()
    assert v1.status_code == 200
    assert body["prediction"] == "INCONCLUSIVE"
    assert body["is_fake"] is None and body["confidence"] is None and body["fake_probability"] is None
    assert body["reason"].startswith("too short to judge:") and "at least 2 s needed" in body["reason"]
    assert body["windows"] and body["segments"] == []
    # Which way it leaned: fields of their own, never the verdict.
    lean = "FAKE" if body["leaning_fake_probability"] >= 0.5 else "REAL"
    assert body["leaning"] == lean and 0 <= body["leaning_fake_probability"] <= 1
    assert (parsed.prediction, parsed.leaning) == ("INCONCLUSIVE", lean)
    assert parsed.leaning_fake_probability == body["leaning_fake_probability"]
    assert legacy.status_code == 422 and legacy.json()["code"] == "audio_too_short"
    assert "too short to judge" in legacy.json()["detail"]
    done = messages[-1]
    assert done["type"] == "done" and done["prediction"] == "INCONCLUSIVE" and done["reason"]
    assert done["leaning"] in ("REAL", "FAKE") and done["leaning_fake_probability"] is not None


@pytest.mark.slow
async def test_long_recording_on_an_idle_cpu_server_gets_every_window(detectors, real_speech):
    """A 300 s recording (150 windows): the deadline follows the work, so an idle server answers."""
    reps = int(np.ceil(300 * SAMPLE_RATE / len(real_speech)))
    wave = np.tile(real_speech, reps)[: 300 * SAMPLE_RATE]
    data = flac(wave)
    windows = len(prepare(data, AudioOptions())[1].spans)
    with live_server(detectors, request_timeout_s=30.0) as srv:
        async with httpx.AsyncClient(timeout=600) as client:
            r = await client.post(f"{srv.url}/v1/predict", files={"file": ("long.flac", data)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["windows"]) == windows >= 149
    assert body["duration_s"] == pytest.approx(300.0)


async def test_busy_server_refuses_up_front_instead_of_timing_out(detectors, real_speech):
    """With work queued ahead that would keep a new file past its deadline, the answer is 503 at once."""
    long = flac(np.tile(real_speech, 10))  # about 130 s: 64 windows, tens of seconds on a CPU
    short = flac(real_speech[: 8 * SAMPLE_RATE])  # 3 windows, a few seconds' work
    with live_server(detectors, request_timeout_s=1.0, max_batch_size=4) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=600) as client:
            first = asyncio.ensure_future(client.post("/v1/predict", files={"file": ("a.flac", long)}))
            await asyncio.sleep(1.0)
            started = asyncio.get_running_loop().time()
            second = await client.post("/v1/predict", files={"file": ("b.flac", short)})
            waited = asyncio.get_running_loop().time() - started
            assert (await first).status_code == 200  # the long one, admitted when idle, is answered
    assert second.status_code == 503, second.text
    assert second.json()["code"] == "overloaded"
    assert int(second.headers["retry-after"]) >= 1
    assert waited < 5.0  # refused after decoding, not after working until the deadline
