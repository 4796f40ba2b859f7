"""The HTTP service against real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import io
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from servers import PoisonedDetector, ServerProcess, live_server
from test_edges import espeak_speech, shared_speech, splice
from voxguard.audio.options import AudioOptions
from voxguard.audio.windows import prepare
from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE, spec_of
from voxguard.scoring import summarize
from voxguard.settings import Settings

REPO = Path(__file__).resolve().parents[1]

# Every test here holds in both wirings: one process, and the engine with front-ends (servers.SplitServer).
pytestmark = pytest.mark.usefixtures("serving_mode")


def wav_bytes(wave: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@pytest.fixture(scope="module")
def detectors(detector_factory) -> dict:
    return {"aasist": detector_factory("aasist", "fast")}


@pytest.fixture(scope="module")
def uploads(samples_dir) -> list[tuple[str, bytes]]:
    """Real recordings in several formats, plus a 12-second file that needs several windows."""
    names = [
        "p225_002_mic2.flac",
        "p225_001_mic1.flac",
        "voicememo.mp3",
        "derived/voicememo_opus-24k.ogg",
        "derived/p225_002_mic1_44k1-stereo.wav",
        "derived/p225_001_mic2_tel8k.wav",
    ]
    files = [(Path(n).name, (samples_dir / n).read_bytes()) for n in names]
    long_wave = np.concatenate([prepare(data, AudioOptions())[0].waveform for _, data in files[:4]] * 2)
    files.append(("long.wav", wav_bytes(long_wave)))
    return files


def metric(text: str, name: str) -> float:
    """Sum of all samples of a metric (every label set)."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def expected(detector, data: bytes, options: AudioOptions | None = None):
    """What the service should answer for ``data``, by the default rule (a ``Verdict``)."""
    audio, windows = prepare(data, options or AudioOptions())
    return summarize(
        audio,
        windows,
        detector.scores(windows.batch),
        Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE),
    )


async def post_all(url: str, files: list[tuple[str, bytes]], **kw) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120, **kw) as client:
        return await asyncio.gather(*(client.post("/v1/predict", files={"file": f}) for f in files))


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(detectors, uploads):
    want = {name: expected(detectors["aasist"], data) for name, data in uploads}
    requests = [uploads[i % len(uploads)] for i in range(32)]
    with live_server(detectors, max_batch_size=16, max_wait_ms=20) as srv:
        responses = await post_all(srv.url, requests)
        metrics = httpx.get(f"{srv.url}/metrics").text
    for (name, _), r in zip(requests, responses, strict=True):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prediction"] == want[name].prediction
        assert [w["score"] for w in body["windows"]] == pytest.approx(
            [w.score for w in want[name].windows], abs=1e-4
        )
        if body["prediction"] == "INCONCLUSIVE":
            assert body["score"] is None and body["reason"] == want[name].decision.reason
        else:
            assert body["score"] == pytest.approx(want[name].decision.score, abs=1e-4)
        assert sum(body["batch_sizes"]) >= len(body["windows"]) and max(body["batch_sizes"]) <= 16
        assert set(body["timing"]) == {"decode_ms", "queue_ms", "inference_ms", "total_ms"}
    long_body = next(r.json() for (n, _), r in zip(requests, responses, strict=True) if n == "long.wav")
    assert len(long_body["windows"]) > 1
    mean_batch = metric(metrics, "voxguard_batch_size_sum") / metric(metrics, "voxguard_batch_size_count")
    assert mean_batch > 1
    assert metric(metrics, "voxguard_requests_total") >= 32


async def test_queue_full_is_503_with_retry_after(detectors, uploads):
    with live_server(detectors, max_batch_size=1, queue_size=2) as srv:
        responses = await post_all(srv.url, [uploads[0]] * 12)
        metrics = httpx.get(f"{srv.url}/metrics").text
    refused = [r for r in responses if r.status_code == 503]
    assert refused and any(r.status_code == 200 for r in responses)
    assert all(r.json()["code"] == "queue_full" and int(r.headers["retry-after"]) >= 1 for r in refused)
    assert {r.status_code for r in responses} <= {200, 503}
    assert metric(metrics, "voxguard_requests_total") >= 12


async def test_deadline_is_504_and_expired_windows_are_not_computed(detectors, uploads):
    with live_server(detectors, max_batch_size=1, request_timeout_s=0.6) as srv:
        # The device turns out far slower than measured (1 ms a window), so requests are admitted that
        # cannot finish in time: their deadline, not the admission estimate, has to stop them.
        srv.batcher.calibrate({1: 0.001})
        responses = await post_all(srv.url, [uploads[0]] * 10)
        await asyncio.sleep(1.0)  # let the worker reach the expired windows
        metrics = httpx.get(f"{srv.url}/metrics").text
    late = [r for r in responses if r.status_code == 504]
    assert late and all(r.json()["code"] == "deadline_exceeded" for r in late)
    assert metric(metrics, "voxguard_dropped_expired_total") >= 1
    computed = metric(metrics, "voxguard_batch_size_sum")
    assert computed < 10


async def test_disconnected_clients_windows_are_skipped(detectors, uploads):
    with live_server(detectors, max_batch_size=1) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as client:
            blocker = asyncio.ensure_future(client.post("/v1/predict", files={"file": uploads[-1]}))
            await asyncio.sleep(0.3)  # the long file's windows now occupy the worker
            async with httpx.AsyncClient(base_url=srv.url, timeout=120) as quitter:
                gone = [
                    asyncio.ensure_future(quitter.post("/v1/predict", files={"file": uploads[0]}))
                    for _ in range(4)
                ]
                # the batch route drops its windows too when its client goes
                batch = [("files", uploads[0]), ("files", uploads[2])]
                gone.append(asyncio.ensure_future(quitter.post("/v1/predict/batch", files=batch)))
                await asyncio.sleep(0.3)
                for task in gone:
                    task.cancel()
                await asyncio.gather(*gone, return_exceptions=True)
            assert (await blocker).status_code == 200
            metrics = (await client.get("/metrics")).text
            assert (await client.post("/v1/predict", files={"file": uploads[0]})).status_code == 200
    assert metric(metrics, "voxguard_dropped_cancelled_total") >= 3
    assert 'route="/v1/predict",status="499"' in metrics
    assert 'route="/v1/predict/batch",status="499"' in metrics


async def test_a_failing_forward_fails_only_its_own_request(detectors, uploads):
    rng = np.random.default_rng(1)
    good = [
        (f"good{i}.wav", wav_bytes((rng.standard_normal(40000) * 0.05).astype(np.float32))) for i in range(4)
    ]
    poison_wave = (rng.standard_normal(40000) * 0.05).astype(np.float32)
    poison_wave[0] = PoisonedDetector.POISON
    reference = AudioOptions(preprocess="reference")
    want = {name: expected(detectors["aasist"], data, reference) for name, data in good}
    poisoned = {"aasist": PoisonedDetector(detectors["aasist"])}
    with live_server(poisoned, max_batch_size=8, max_wait_ms=300, preprocess="reference") as srv:
        responses = await post_all(srv.url, [*good, ("poison.wav", wav_bytes(poison_wave))])
        after = await post_all(srv.url, [good[0]])
    *ok, bad = responses
    assert bad.status_code == 500
    assert bad.json()["code"] == "inference_failed" and re.fullmatch(r"[0-9a-f]{12}", bad.json()["error_id"])
    for (name, _), r in zip(good, ok, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["score"] == pytest.approx(want[name].decision.score, abs=1e-4)
    assert after[0].status_code == 200


async def test_worker_restarts_and_ready_reports_it(detectors, uploads):
    with live_server(detectors) as srv:
        batcher = srv.batcher
        batcher._restart_delay_s = 1.5
        original = batcher._pick_model

        def explode():
            batcher._pick_model = original
            raise RuntimeError("worker crash (test)")

        batcher._pick_model = explode
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            pending = asyncio.ensure_future(client.post("/v1/predict", files={"file": uploads[0]}))
            async with asyncio.timeout(30):  # polled, not a fixed sleep: a loaded machine can be slow
                while not batcher.restarts:  # until the request reached the worker, which died
                    await asyncio.sleep(0.01)
            # Split, the front-end learns of it from the engine's next status; well before the restart.
            seen = time.monotonic()
            while (down := await client.get("/ready")).status_code == 200 and time.monotonic() - seen < 1.0:
                await asyncio.sleep(0.05)
            assert down.status_code == 503 and down.json()["code"] == "not_ready"
            assert (await client.get("/health")).status_code == 200
            response = await pending
            assert response.status_code == 200
            assert (await client.get("/ready")).status_code == 200
        assert batcher.restarts == 1


IN_FLIGHT = 36


def test_sigterm_drains_in_flight_requests(checkpoint_dir, uploads, tmp_path, serving_mode):
    """N requests in flight are all answered, a request arriving during the drain gets 503 (the server
    still listens), and the process exits 0; split, as real processes: a supervisor, an engine and two
    front-ends."""
    frontends = ["--frontends", "2"] if serving_mode == "split" else []
    server = ServerProcess(
        ["--max-batch-size", "2", "--checkpoint-dir", str(checkpoint_dir), *frontends],
        {"TMPDIR": str(tmp_path)},
    )
    try:
        server.wait_ready()

        async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response, float]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                # Enough short files that the drain still has work 0.3 s after the signal on a fast CPU
                # (twelve were once all answered by then, and the late request found no listener).
                tasks = [
                    asyncio.ensure_future(client.post("/v1/predict", files={"file": uploads[i % 3]}))
                    for i in range(IN_FLIGHT)
                ]
                await asyncio.sleep(0.5)
                server.terminate()
                signalled = time.monotonic()
                await asyncio.sleep(0.3)  # uvicorn alone would have closed its listener by now
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as late:
                    refused = await late.post("/v1/predict", files={"file": uploads[0]})
                    ready = await late.get("/ready")
                return await asyncio.gather(*tasks), refused, ready, signalled

        responses, refused, ready, signalled = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * IN_FLIGHT
        assert refused.status_code == 503 and refused.json()["code"] == "shutting_down"
        assert refused.headers["retry-after"] == "1"
        assert ready.status_code == 503
        assert server.proc.wait(timeout=60) == 0  # a clean drain is a clean exit
        assert "drained and stopped" in server.output()
        if serving_mode == "split":
            assert "engine drained and stopped" in server.output()
            assert "exit codes [0, 0, 0]" in server.output()
        assert time.monotonic() - signalled < 60
    finally:
        server.close()


def test_upload_limit_is_enforced_while_streaming(detectors):
    limit_mb = 0.1
    with live_server(detectors, max_upload_mb=limit_mb) as srv:
        declared = _raw_request(srv.port, b"Content-Length: 10000000\r\nContent-Type: audio/wav\r\n", b"")
        assert declared.startswith(b"HTTP/1.1 413")
        sent, reply = _chunked_until_answered(srv.port, chunk=32 * 1024, total=8 * 1024 * 1024)
        assert reply.startswith(b"HTTP/1.1 413") and b"upload_too_large" in reply
        assert sent < 8 * 1024 * 1024  # refused long before the body was all sent
        small = httpx.post(
            f"{srv.url}/v1/predict", content=b"x" * 1000, headers={"content-type": "audio/wav"}
        )
        assert small.status_code == 415 and small.json()["code"] == "undecodable_audio"


def _raw_request(port: int, headers: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n" + body)
        return s.recv(65536)


def _chunked_until_answered(port: int, chunk: int, total: int) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: audio/wav\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        s.setblocking(False)
        sent = 0
        while sent < total:
            try:
                reply = s.recv(65536)
                if reply:
                    return sent, reply
            except BlockingIOError:
                pass
            try:
                s.sendall(f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n")
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            sent += chunk
            time.sleep(0.002)
        s.setblocking(True)
        return sent, s.recv(65536)


async def test_api_keys(detectors, uploads):
    with live_server(detectors, api_keys=["k1", "k2"]) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
            missing = await c.post("/v1/predict", files={"file": uploads[0]})
            assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await c.post("/v1/predict", files={"file": uploads[0]}, headers={"X-API-Key": "k3"})
            assert wrong.status_code == 401
            by_header = await c.post("/v1/predict", files={"file": uploads[0]}, headers={"X-API-Key": "k2"})
            by_bearer = await c.post(
                "/v1/predict", files={"file": uploads[0]}, headers={"Authorization": "Bearer k1"}
            )
            assert by_header.status_code == 200 and by_bearer.status_code == 200
            assert (await c.get("/v1/models")).status_code == 401
            for probe in ("/health", "/ready", "/metrics"):
                assert (await c.get(probe)).status_code == 200
    with live_server(detectors, api_keys=["k1"], protect_probes=True) as srv:
        assert httpx.get(f"{srv.url}/metrics").status_code == 401
        assert httpx.get(f"{srv.url}/metrics", headers={"X-API-Key": "k1"}).status_code == 200


async def test_https_with_make_certs(detectors, uploads, tmp_path):
    subprocess.run(
        ["make", "-s", "-C", str(REPO), "certs", f"CERT_DIR={tmp_path}"], check=True, capture_output=True
    )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    with live_server(detectors, ssl_certfile=str(cert), ssl_keyfile=str(key)) as srv:
        assert srv.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=srv.url, verify=context, timeout=60) as c:
            r = await c.post("/v1/predict", files={"file": uploads[0]})
            assert r.status_code == 200 and r.json()["prediction"] == "REAL"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.url}/health")  # self-signed: refused without trusting the certificate
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{srv.port}/health")


async def test_seed_compatible_endpoints_and_errors(detectors, uploads):
    with live_server(detectors) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
            seed = await c.post("/predict", files={"file": uploads[2]})
            assert seed.status_code == 200 and set(seed.json()) == {"is_fake", "confidence", "prediction"}
            health = (await c.get("/health")).json()
            assert health["status"] == "ok" and health["model_loaded"] is True and health["device"] == "cpu"
            raw = await c.post("/v1/predict", content=uploads[2][1], headers={"content-type": "audio/mpeg"})
            assert raw.status_code == 200 and raw.json()["sample_rate"] == 44100
            missing = await c.post("/v1/predict", files={"audio": uploads[0]})
            assert missing.status_code == 422 and missing.json()["code"] == "missing_file_field"
            text = await c.post("/v1/predict", content=b"hello", headers={"content-type": "text/plain"})
            assert text.status_code == 415 and text.json()["code"] == "unsupported_media_type"
            png = await c.post("/v1/predict", files={"file": ("x.wav", b"\x89PNG\r\n\x1a\n" + bytes(100))})
            assert png.status_code == 415 and "Accepted" in png.json()["detail"]
            unknown = await c.post("/v1/predict?model=wavlm", files={"file": uploads[0]})
            assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_model"
            batch = await c.post(
                "/v1/predict/batch",
                files=[("files", uploads[0]), ("files", ("bad.mp3", b"garbage")), ("files", uploads[2])],
            )
            results = batch.json()["results"]
            assert [r["filename"] for r in results] == [uploads[0][0], "bad.mp3", uploads[2][0]]
            assert (
                results[0]["result"]["prediction"] == "REAL"
                and results[1]["error"]["code"] == "undecodable_audio"
            )
            assert results[2]["result"]["sample_rate"] == 44100
            models = (await c.get("/v1/models")).json()
            assert models["default"] == "aasist" and models["models"][0]["parameters"] == 297_866
            # The offset and scale the verdict rule applies: the official weights' own.
            official = spec_of("aasist")
            assert (models["models"][0]["score_offset"], models["models"][0]["score_scale"]) == (
                official.score_offset,
                official.score_scale,
            )
            assert (await c.get("/nope")).json()["code"] == "not_found"
            assert "x-request-id" in seed.headers


async def test_openapi_is_valid_and_docs_work_offline(detectors):
    from openapi_spec_validator import validate

    with live_server(detectors) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
            spec = (await c.get("/openapi.json")).json()
            validate(spec)
            assert "multipart/form-data" in spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
            assert "example" in spec["components"]["schemas"]["PredictResponse"]
            for page in ("/docs", "/redoc"):
                html = (await c.get(page)).text
                sources = re.findall(r'(?:src|href)="([^"]+)"', html)
                assert sources and all(s.startswith("/") for s in sources), sources
                for s in sources:
                    assert (await c.get(s)).status_code == 200, s


async def test_draining_server_refuses_new_work_with_503(detectors, uploads):
    with live_server(detectors) as srv:
        srv.stop_admitting()
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
            refused = await c.post("/v1/predict", files={"file": uploads[0]})
            assert refused.status_code == 503 and refused.json()["code"] == "shutting_down"
            assert refused.headers["retry-after"] == "1"
            ready = await c.get("/ready")
            assert ready.status_code == 503 and "shutting down" in ready.json()["detail"]


class _GatedPipeline:
    """The service's pipeline, except that decoding waits for ``release``: a request is then admitted
    and still decoding for as long as the test wants (what a drain under load meets)."""

    def __init__(self, pipeline) -> None:
        self._pipeline = pipeline
        self.entered: list[int] = []  # one entry per decoding that began (list.append is thread-safe)
        self.release = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._pipeline, name)

    def windows(self, data: bytes):
        self.entered.append(len(data))
        self.release.wait(60)
        return self._pipeline.windows(data)


async def test_a_drain_answers_a_request_admitted_while_it_was_still_decoding(detectors, uploads):
    """The flaky 503 of test_sigterm_drains_in_flight_requests[split]: a request admitted before the
    signal but still decoding when it came was refused at submission, as if it were new."""
    with live_server(detectors) as srv:
        services = getattr(srv, "services", [srv.service])
        gates = [_GatedPipeline(s.pipeline) for s in services]
        for service, gate in zip(services, gates, strict=True):
            service.pipeline = gate
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
            admitted = [
                asyncio.ensure_future(c.post("/v1/predict", files={"file": uploads[2]})),  # mp3: the pool
                asyncio.ensure_future(c.post("/v1/predict/batch", files=[("files", uploads[0])])),
            ]
            while sum(len(g.entered) for g in gates) < 2:  # both admitted, both held in decoding
                await asyncio.sleep(0.01)
            srv.stop_admitting()  # what SIGTERM starts
            busy = [s for s, g in zip(services, gates, strict=True) if g.entered]
            assert not any(s.idle for s in busy)  # the drain waits for them
            refused = await c.post("/v1/predict", files={"file": uploads[0]})
            assert refused.status_code == 503 and refused.json()["code"] == "shutting_down"
            for gate in gates:
                gate.release.set()
            single, batch = await asyncio.gather(*admitted)
    assert single.status_code == 200, single.text
    assert batch.status_code == 200 and batch.json()["results"][0]["result"]["prediction"] == "REAL"


async def test_segment_edges_are_placed_by_the_localizer_without_a_second_engine_round(
    detectors, samples_dir, tmp_path
):
    """An upload and a batch get the localizer's edges in both wirings, and the engine scores each file's
    windows once: placing edges costs no second round on the device."""
    real, fake = shared_speech(samples_dir), espeak_speech(tmp_path)
    truths = [(9.27, 14.92), (11.03, 15.6)]
    files = [(f"{i}.flac", splice(real, fake, 20.0 + 2 * i, t)) for i, t in enumerate(truths)]
    with live_server(detectors) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as c:
            one = (await c.post("/v1/predict", files={"file": files[0]})).json()
            batch = (await c.post("/v1/predict/batch", files=[("files", f) for f in files])).json()
    bodies = [one, *(r["result"] for r in batch["results"])]
    for body, truth in zip(bodies, [truths[0], *truths], strict=True):
        assert body["prediction"] == "FAKE", body
        starts, ends = [s["start_s"] for s in body["segments"]], [s["end_s"] for s in body["segments"]]
        assert abs(min(starts) - truth[0]) <= 1.0 and abs(max(ends) - truth[1]) <= 1.0, body["segments"]
    assert len(one["windows"]) == 9 and sum(one["batch_sizes"]) == 9
