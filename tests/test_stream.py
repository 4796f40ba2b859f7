"""``WebSocket /v1/stream`` against a real uvicorn server: live windows equal upload windows."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets
from pydantic import TypeAdapter

from servers import live_server
from tone_model import ToneDetector, tone_spliced
from voxguard.api.protocol import StreamDone, StreamError, StreamEvent, StreamWindow
from voxguard.audio.options import AudioOptions
from voxguard.audio.streaming import StreamWindower
from voxguard.audio.windows import make_windows
from voxguard.pipeline import Pipeline
from voxguard.scoring import Rule


@pytest.fixture(scope="module")
def detectors(detector_factory) -> dict:
    return {"aasist": detector_factory("aasist", "fast")}


@pytest.fixture(scope="module")
def speech(samples_dir) -> np.ndarray:
    """About 13 s of real 16 kHz speech (several recordings end to end)."""
    names = ["p225_001_mic1.flac", "p225_002_mic1.flac", "p225_001_mic2.flac", "p225_002_mic2.flac"]
    return np.concatenate([sf.read(samples_dir / n, dtype="float32")[0] for n in names])


def pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def test_stream_windower_yields_exactly_the_upload_windows():
    rng = np.random.default_rng(0)
    for n in (30_000, 64_600, 64_601, 100_000, 224_600):
        for hop in (16_000, 32_000):
            x = (rng.standard_normal(n) * 0.1).astype(np.float32)
            want = make_windows(x, hop=hop)
            windower = StreamWindower(AudioOptions(), hop)
            parts = [windower.feed(x[i : i + 3333]) for i in range(0, n, 3333)] + [windower.finish()]
            got = [p for p in parts if p is not None]
            assert [s for p in got for s in p.spans] == want.spans
            np.testing.assert_array_equal(np.concatenate([p.batch for p in got]), want.batch)


async def _stream(
    url: str, frames: list[bytes], first: dict | None = None, **query
) -> tuple[list[dict], int]:
    """Send the frames and an end message while reading replies; returns them and the close code."""
    uri = url.replace("http", "ws", 1) + "/v1/stream"
    if query:
        uri += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    async with websockets.connect(uri, max_size=None) as ws:

        async def send_all() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):  # the server may close early, on purpose
                if first is not None:
                    await ws.send(json.dumps(first))
                for frame in frames:
                    await ws.send(frame)
                await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.ensure_future(send_all())
        messages = []
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:
                messages.append(json.loads(text))
        await sender
        return messages, ws.close_code


async def test_streamed_windows_equal_predict_windows(detectors, speech):
    data = pcm16(speech)
    frames = [data[i : i + 16000] for i in range(0, len(data), 16000)]  # 0.5 s frames
    with live_server(detectors, stream_max_pending=64) as srv:
        messages, close_code = await _stream(srv.url, frames, {"format": "s16", "hop_s": 2.0})
        buf = io.BytesIO()  # the upload gets exactly the same int16 samples
        sf.write(buf, np.frombuffer(data, dtype="<i2"), 16000, format="WAV", subtype="PCM_16")
        upload = httpx.post(
            f"{srv.url}/v1/predict", files={"file": ("s.wav", buf.getvalue())}, timeout=120
        ).json()
    windows = [m for m in messages if m["type"] == "window"]
    done = messages[-1]
    assert close_code == 1000 and done["type"] == "done"
    assert [(w["start_s"], w["end_s"]) for w in windows] == [
        (w["start_s"], w["end_s"]) for w in upload["windows"]
    ]
    assert [w["score"] for w in windows] == pytest.approx([w["score"] for w in upload["windows"]], abs=1e-4)
    assert done["windows"] == len(windows) and done["prediction"] == upload["prediction"]
    assert done["score"] == pytest.approx(upload["score"], abs=1e-4)
    events = TypeAdapter(StreamEvent)  # every message is one of the typed events, nothing more
    assert [events.validate_python(m).model_dump() for m in messages] == messages


async def test_a_live_window_is_judged_by_the_rule_that_judges_the_upload(detectors):
    """The stream decides a window with the model's own ``Rule``, the object its uploads are judged by
    (``Settings.rule`` made it; here a custom one): same probability, same call, same verdict. Its
    threshold (0.9) is not the settings' (0.5): the tone windows' probability (about 0.73 with this
    offset) is FAKE by the settings' threshold, which the stream once applied by itself, and REAL by the
    rule, as the file that holds them is REAL."""
    rule = Rule(threshold=0.9, min_windows=1, min_reliable_s=2.0, offset=15.0)
    data = tone_spliced(20.0, (9.27, 14.92))  # noise, and a stretch that ToneModel calls synthetic
    wave, rate = sf.read(io.BytesIO(data), dtype="float32")
    frames = [wave[i : i + rate // 2].astype("<f4").tobytes() for i in range(0, len(wave), rate // 2)]
    with live_server({"aasist": ToneDetector(detectors["aasist"])}, stream_max_pending=64) as srv:
        services = getattr(srv, "services", None) or [srv.service]  # either wiring
        for service in services:
            service.pipelines["aasist"] = Pipeline(service.pipelines["aasist"].options, rule)
        messages, close_code = await _stream(srv.url, frames, {"format": "f32", "hop_s": 2.0})
        upload = httpx.post(f"{srv.url}/v1/predict", files={"file": ("s.wav", data)}, timeout=120).json()
    assert close_code == 1000
    live = [m for m in messages if m["type"] == "window"]
    done = messages[-1]
    probabilities = [w["fake_probability"] for w in upload["windows"]]
    assert [w["fake_probability"] for w in live] == pytest.approx(probabilities, abs=1e-9)
    assert [w["prediction"] for w in live] == ["FAKE" if rule.is_fake(p) else "REAL" for p in probabilities]
    assert any(0.5 <= p < rule.threshold for p in probabilities)  # where the two thresholds part
    assert {w["prediction"] for w in live} == {"REAL"} and upload["prediction"] == "REAL"
    assert (done["prediction"], done["segments"]) == (upload["prediction"], upload["segments"])
    assert (done["fake_probability"], done["score"]) == pytest.approx(
        (upload["fake_probability"], upload["score"])
    )


async def test_stream_refuses_unusable_sample_rates_and_bad_frames(detectors, speech):
    with live_server(detectors) as srv:
        messages, code = await _stream(srv.url, [pcm16(speech[:8000])], {"sample_rate": 1000})
        assert code == 1003 and messages == [messages[0]] and messages[0]["code"] == "unsupported_sample_rate"
        messages, code = await _stream(srv.url, [b"\x00\x01\x02"])
        assert code == 1003 and messages[0]["code"] == "invalid_frame"
        assert isinstance(TypeAdapter(StreamEvent).validate_python(messages[0]), StreamError)


async def test_a_client_flooding_audio_is_dropped_with_a_close_code(detectors, speech):
    data = pcm16(np.tile(speech, 3))  # ~40 s sent at once, hop 0.5 s: far more windows than allowed
    frames = [data[i : i + 32000] for i in range(0, len(data), 32000)]
    with live_server(detectors, stream_max_pending=4) as srv:
        messages, code = await _stream(srv.url, frames, {"hop_s": 0.5})
        assert code == 1013 and messages[-1]["code"] == "slow_consumer"
        assert httpx.get(f"{srv.url}/ready").status_code == 200


async def test_stream_needs_the_api_key_when_keys_are_set(detectors, speech):
    with live_server(detectors, api_keys=["k"]) as srv:
        messages, code = await _stream(srv.url, [pcm16(speech[:16000])])
        assert code == 1008 and messages[0]["code"] == "unauthorized"
        frames = [pcm16(speech[i : i + 16000]) for i in range(0, 80000, 16000)]
        messages, code = await _stream(srv.url, frames, api_key="k")
        assert code == 1000 and messages[-1]["type"] == "done"
        too_big, code = await _stream(srv.url, [pcm16(speech[:20000])], api_key="k")
        assert code == 1009 and too_big[-1]["code"] == "frame_too_large"


def _upload_windows(url: str, samples: np.ndarray, rate: int = 16000) -> dict:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return httpx.post(f"{url}/v1/predict", files={"file": ("s.wav", buf.getvalue())}, timeout=120).json()


async def test_python_client_streams_sync_and_async(detectors, speech):
    from voxguard.client import AsyncClient, Client, VoxguardError

    samples = (np.clip(speech[: 9 * 16000], -1, 1) * 32767).astype(np.int16)
    frames = [samples[i : i + 8000] for i in range(0, len(samples), 8000)]
    with live_server(detectors, stream_max_pending=64) as srv:
        want = [w["score"] for w in _upload_windows(srv.url, samples)["windows"]]

        def sync_run() -> list[dict]:
            with Client(srv.url) as client:
                return list(client.stream(frames, hop_s=2.0))

        messages = await asyncio.to_thread(sync_run)
        async with AsyncClient(srv.url) as client:
            async_messages = [m async for m in client.stream(frames, hop_s=2.0)]
            with pytest.raises(VoxguardError) as refused:
                async for _ in client.stream(frames, sample_rate=1000):
                    pass
    for got in (messages, async_messages):
        assert isinstance(got[-1], StreamDone) and got[-1].prediction in ("REAL", "FAKE")
        assert all(isinstance(m, StreamWindow) for m in got[:-1])
        assert [m.score for m in got[:-1]] == pytest.approx(want, abs=1e-4)
    assert refused.value.code == "unsupported_sample_rate"


async def test_other_sample_rates_are_resampled_like_uploads(detectors, speech):
    """A 48 kHz stream gives the windows of the same 48 kHz audio uploaded as a file."""
    import torch
    import torchaudio.functional as taf

    audio48 = taf.resample(torch.from_numpy(speech[: 10 * 16000]), 16000, 48000).numpy()
    samples = (np.clip(audio48, -1, 1) * 32767).astype(np.int16)
    frames = [samples[i : i + 12000].tobytes() for i in range(0, len(samples), 12000)]  # 0.25 s frames
    with live_server(detectors, stream_max_pending=64) as srv:
        messages, code = await _stream(srv.url, frames, {"sample_rate": 48000, "hop_s": 2.0})
        upload = _upload_windows(srv.url, samples, rate=48000)
    assert code == 1000
    windows = [m for m in messages if m["type"] == "window"]
    spans = [t for w in windows for t in (w["start_s"], w["end_s"])]
    assert spans == pytest.approx([t for w in upload["windows"] for t in (w["start_s"], w["end_s"])])
    assert [w["score"] for w in windows] == pytest.approx([w["score"] for w in upload["windows"]], abs=1e-4)


async def test_a_silent_client_is_closed_after_the_idle_timeout(detectors, speech):
    with live_server(detectors, stream_idle_s=0.5) as srv:
        uri = srv.url.replace("http", "ws", 1) + "/v1/stream"
        for first in (None, pcm16(speech[:8000])):  # silent from the start, and after some audio
            async with websockets.connect(uri) as ws:
                started = asyncio.get_running_loop().time()
                if first is not None:
                    await ws.send(first)
                error = json.loads(await asyncio.wait_for(ws.recv(), 10))
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                assert error["type"] == "error" and error["code"] == "idle_timeout", error
                assert ws.close_code == 1008
                assert asyncio.get_running_loop().time() - started < 5


async def test_a_failing_frame_source_ends_the_client_stream_with_its_error(detectors, speech):
    """The frames iterable raising mid-stream used to leave the sync client waiting forever."""
    from voxguard.client import AsyncClient, Client

    class MicrophoneGone(RuntimeError):
        pass

    def frames():
        yield pcm16(speech[:8000])
        raise MicrophoneGone("the microphone was unplugged")

    with live_server(detectors, stream_idle_s=60) as srv:

        def sync_run() -> None:
            with Client(srv.url) as client:
                list(client.stream(frames()))

        with pytest.raises(MicrophoneGone):
            await asyncio.wait_for(asyncio.to_thread(sync_run), 20)
        async with AsyncClient(srv.url) as client:
            with pytest.raises(MicrophoneGone):
                async with asyncio.timeout(20):
                    async for _ in client.stream(frames()):
                        pass
