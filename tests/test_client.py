"""voxguard.client end to end against real uvicorn servers on loopback; the retry policy alone on mocks."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from servers import free_port, live_server
from voxguard.api.protocol import HealthResponse, ModelsResponse, PredictResponse
from voxguard.client import AsyncClient, Client, RetryPolicy, VoxguardError

REPO = Path(__file__).resolve().parents[1]
RETRY_LOG = "voxguard.client"


@pytest.fixture(scope="module")
def detectors(detector_factory) -> dict:
    return {"aasist": detector_factory("aasist", "fast")}


@pytest.fixture(scope="module")
def server(detectors):
    with live_server(detectors) as srv:
        yield srv


@pytest.fixture(scope="module")
def mp3(samples_dir) -> Path:
    return samples_dir / "voicememo.mp3"


@pytest.fixture(scope="module")
def flac(samples_dir) -> Path:
    return samples_dir / "p225_002_mic2.flac"  # 2.5 s of speech: enough for a verdict


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == RETRY_LOG and "retry" in r.getMessage()]


# --- end to end: Client ---------------------------------------------------------------------------------


def test_predict_from_path_bytes_and_file_object_matches_a_direct_call(server, mp3, flac):
    direct = {
        p: httpx.post(f"{server.url}/v1/predict", files={"file": (p.name, p.read_bytes())}, timeout=60).json()
        for p in (mp3, flac)
    }
    with Client(server.url) as client:
        by_path = client.predict(mp3)
        by_str = client.predict(str(flac))
        by_bytes = client.predict(mp3.read_bytes())
        with flac.open("rb") as f:
            by_file = client.predict(f)
    for result, source in ((by_path, mp3), (by_bytes, mp3), (by_str, flac), (by_file, flac)):
        assert isinstance(result, PredictResponse)
        want = direct[source]
        assert result.prediction == want["prediction"] == "REAL"
        assert result.score == pytest.approx(want["score"], abs=1e-4)
        assert [w.score for w in result.windows] == pytest.approx(
            [w["score"] for w in want["windows"]], abs=1e-4
        )
    assert by_path.sample_rate == 44100 and by_file.sample_rate == 16000


def test_model_is_passed_through(server, mp3):
    with Client(server.url) as client:
        assert client.predict(mp3, model="aasist").model == "aasist"
        with pytest.raises(VoxguardError) as caught:
            client.predict(mp3, model="wavlm")
    assert caught.value.status == 400 and caught.value.code == "unknown_model"
    assert "aasist" in caught.value.detail  # the server names the loaded models


def test_predict_many_returns_results_and_errors_in_input_order(server, mp3, flac, caplog):
    caplog.set_level(logging.DEBUG, logger=RETRY_LOG)
    with Client(server.url) as client:
        out = client.predict_many(
            [mp3, flac.read_bytes(), b"not audio at all", mp3, str(flac)], concurrency=3
        )
    assert [type(o) for o in out] == [PredictResponse] * 2 + [VoxguardError] + [PredictResponse] * 2
    assert out[2].status == 415 and out[2].code == "undecodable_audio"
    assert [o.sample_rate for o in out if isinstance(o, PredictResponse)] == [44100, 16000, 44100, 16000]
    assert not retries_logged(caplog)  # a 415 is the caller's problem: not retried


def test_an_unreadable_path_is_an_error_in_its_place_not_the_end_of_the_batch(server, mp3, flac, tmp_path):
    missing = tmp_path / "missing.wav"
    with Client(server.url) as client:
        out = client.predict_many([mp3, missing, flac], concurrency=2)
        with pytest.raises(VoxguardError) as caught:
            client.predict(missing)
    assert [type(o) for o in out] == [PredictResponse, VoxguardError, PredictResponse]
    assert (out[1].status, out[1].code) == (0, "unreadable_file")
    assert out[1].detail.startswith(f"cannot read {missing}: No such file or directory")
    assert isinstance(out[1].__cause__, FileNotFoundError)
    assert (caught.value.status, caught.value.code) == (0, "unreadable_file")


async def test_async_an_unreadable_path_is_an_error_in_its_place(server, mp3, tmp_path):
    async with AsyncClient(server.url) as client:
        out = await client.predict_many([tmp_path, mp3, tmp_path / "missing.flac"], concurrency=2)
    assert [type(o) for o in out] == [VoxguardError, PredictResponse, VoxguardError]
    assert [o.code for o in out if isinstance(o, VoxguardError)] == ["unreadable_file"] * 2
    assert "Is a directory" in out[0].detail


def test_probes(server):
    with Client(server.url) as client:
        health = client.health()
        assert isinstance(health, HealthResponse)
        assert health.model_loaded and health.device == "cpu" and health.models == ["aasist"]
        assert client.ready() is True
        models = client.models()
        assert isinstance(models, ModelsResponse)
        assert models.default == "aasist" and models.models[0].parameters == 297_866


def test_draining_server_is_not_ready_and_its_503_carries_retry_after(detectors, mp3, caplog):
    caplog.set_level(logging.DEBUG, logger=RETRY_LOG)
    with live_server(detectors) as srv, Client(srv.url, retries=1) as client:
        srv.service.admission.stop()
        assert client.ready() is False
        with pytest.raises(VoxguardError) as caught:
            client.predict(mp3)
    assert caught.value.status == 503 and caught.value.code == "shutting_down"
    assert caught.value.retry_after == 1.0
    assert len(retries_logged(caplog)) == 1  # retried once (after the server's 1 s), then given up


def test_api_key(detectors, mp3):
    with live_server(detectors, api_keys=["k"]) as srv:
        with Client(srv.url) as anonymous:
            with pytest.raises(VoxguardError) as caught:
                anonymous.predict(mp3)
            assert caught.value.status == 401 and caught.value.code == "unauthorized"
            with pytest.raises(VoxguardError, match="unauthorized"):
                anonymous.models()
            assert anonymous.health().status == "ok"  # probes stay open unless protect_probes
        with Client(srv.url, api_key="wrong") as wrong, pytest.raises(VoxguardError, match="unauthorized"):
            wrong.predict(mp3)
        with Client(srv.url, api_key="k") as client:
            assert client.predict(mp3).prediction == "REAL"
            assert client.models().default == "aasist"


def test_tls_with_a_ca_file(detectors, mp3, tmp_path, caplog):
    subprocess.run(
        ["make", "-s", "-C", str(REPO), "certs", f"CERT_DIR={tmp_path}"], check=True, capture_output=True
    )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    caplog.set_level(logging.DEBUG, logger=RETRY_LOG)
    with live_server(detectors, ssl_certfile=str(cert), ssl_keyfile=str(key)) as srv:
        assert srv.url.startswith("https://")
        with Client(srv.url, verify=str(cert)) as client:
            assert client.predict(mp3).prediction == "REAL"
        with Client(srv.url, verify=cert) as client:  # a PathLike works too
            assert client.ready()
        with Client(srv.url) as untrusting, pytest.raises(VoxguardError) as caught:
            untrusting.health()  # self-signed: refused by the system CAs
    assert caught.value.status == 0 and caught.value.code == "tls_error"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert not retries_logged(caplog)  # a certificate does not fix itself: not retried


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_queue_full_503s_are_retried_until_every_call_succeeds(detectors, mp3, caplog, flavour):
    caplog.set_level(logging.DEBUG, logger=RETRY_LOG)
    calls = [mp3] * 8
    with live_server(detectors, max_batch_size=1, queue_size=1) as srv:
        if flavour == "sync":
            with Client(srv.url, retries=20) as client:
                out = await asyncio.to_thread(client.predict_many, calls, concurrency=8)
        else:
            async with AsyncClient(srv.url, retries=20) as client:
                out = await client.predict_many(calls, concurrency=8)
        metrics = httpx.get(f"{srv.url}/metrics").text
    assert all(isinstance(o, PredictResponse) for o in out), out
    refused = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("voxguard_requests_total{") and 'status="503"' in line
    )
    assert refused > 0  # the server did refuse some: only the client's retries got them through
    retried = retries_logged(caplog)
    assert len(retried) == refused and all("queue_full" in line for line in retried)  # each one retried


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_connection_refused_is_a_connection_error_after_retries(caplog, flavour):
    caplog.set_level(logging.DEBUG, logger=RETRY_LOG)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(VoxguardError) as caught:
        if flavour == "sync":
            with Client(url, retries=2, backoff=0.01) as client:
                assert client.ready() is False
                client.predict(b"audio")
        else:
            async with AsyncClient(url, retries=2, backoff=0.01) as client:
                assert await client.ready() is False
                await client.predict(b"audio")
    assert caught.value.status == 0 and caught.value.code == "connection_error"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(retries_logged(caplog)) == 2  # ready() is a probe and was not retried


# --- end to end: AsyncClient ----------------------------------------------------------------------------


async def test_async_client_main_paths(server, mp3, flac):
    direct = httpx.post(f"{server.url}/v1/predict", files={"file": (mp3.name, mp3.read_bytes())}, timeout=60)
    async with AsyncClient(server.url) as client:
        by_path = await client.predict(mp3)
        by_bytes = await client.predict(flac.read_bytes())
        with flac.open("rb") as f:
            by_file = await client.predict(f)
        out = await client.predict_many([mp3, b"garbage", flac, mp3], concurrency=2)
        with pytest.raises(VoxguardError) as caught:
            await client.predict(mp3, model="wavlm")
        assert (await client.health()).model_loaded and await client.ready()
        assert (await client.models()).default == "aasist"
    assert by_path.score == pytest.approx(direct.json()["score"], abs=1e-4)
    assert by_bytes.score == pytest.approx(by_file.score, abs=1e-4) and by_file.sample_rate == 16000
    assert [type(o) for o in out] == [PredictResponse, VoxguardError, PredictResponse, PredictResponse]
    assert out[1].code == "undecodable_audio" and out[1].status == 415
    assert out[0].score == pytest.approx(by_path.score, abs=1e-4)
    assert caught.value.status == 400 and caught.value.code == "unknown_model"


async def test_async_api_key(detectors, mp3):
    with live_server(detectors, api_keys=["k"]) as srv:
        async with AsyncClient(srv.url) as anonymous:
            with pytest.raises(VoxguardError) as caught:
                await anonymous.predict(mp3)
        async with AsyncClient(srv.url, api_key="k") as client:
            assert (await client.predict(mp3)).prediction == "REAL"
    assert caught.value.status == 401 and caught.value.code == "unauthorized"


# --- the retry policy alone (mock transports; no server) ------------------------------------------------

EXAMPLE = PredictResponse.model_config["json_schema_extra"]["example"]


def refusal(retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(503, json={"code": "queue_full", "detail": "at capacity"}, headers=headers)


def test_retry_delay_honours_retry_after_else_backs_off_exponentially():
    policy = RetryPolicy(retries=3, backoff=0.5)
    full = VoxguardError(503, "queue_full", "", retry_after=2)
    assert 2.0 <= policy.delay(0, full) <= 2.2  # the server's figure, plus at most 10 % jitter
    assert policy.delay(0, VoxguardError(503, "queue_full", "", retry_after=3600)) == 30.0  # capped
    plain = VoxguardError(503, "not_ready", "")
    for attempt in range(3):
        assert 0.5 * 2**attempt <= policy.delay(attempt, plain) <= 0.55 * 2**attempt
    assert policy.delay(3, plain) is None  # retries used up
    assert 0.5 <= policy.delay(0, VoxguardError(0, "connection_error", "")) <= 0.55
    for status, code in ((422, "no_speech"), (400, "unknown_model"), (401, "unauthorized"),
                         (500, "inference_failed"), (504, "deadline_exceeded"), (0, "timeout"),
                         (0, "tls_error")):  # fmt: skip
        assert policy.delay(0, VoxguardError(status, code, "")) is None, code


def test_client_sleeps_what_retry_after_says_and_resends_the_upload(monkeypatch):
    answers = iter([refusal("2"), refusal(), httpx.Response(200, json=EXAMPLE)])
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return next(answers)

    slept: list[float] = []
    monkeypatch.setattr("voxguard.client.sleep", slept.append)
    audio = bytes(range(256)) * 4
    with Client("http://voxguard", transport=httpx.MockTransport(handler), backoff=0.25) as client:
        result = client.predict(audio, model="aasist-l")
    assert result == PredictResponse.model_validate(EXAMPLE)
    assert len(slept) == 2 and 2.0 <= slept[0] <= 2.2 and 0.5 <= slept[1] <= 0.55  # Retry-After, 0.25 * 2**1
    assert len(bodies) == 3 and all(audio in body for body in bodies)  # every attempt sent the whole file


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (422, {"code": "no_speech", "detail": "silence"}),
        (
            500,
            {
                "code": "inference_failed",
                "detail": "failed (error id 0123456789ab)",
                "error_id": "0123456789ab",
            },
        ),
        (504, {"code": "deadline_exceeded", "detail": "too late"}),
    ],
)
def test_client_errors_server_errors_and_deadlines_are_not_retried(monkeypatch, status, body):
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(status, json=body)

    slept: list[float] = []
    monkeypatch.setattr("voxguard.client.sleep", slept.append)
    transport = httpx.MockTransport(handler)
    with Client("http://voxguard", transport=transport) as client, pytest.raises(VoxguardError) as caught:
        client.predict(b"audio")
    assert len(requests) == 1 and not slept
    error = caught.value
    assert (error.status, error.code, error.detail) == (status, body["code"], body["detail"])
    assert error.error_id == body.get("error_id") and error.retry_after is None


def test_a_body_that_is_not_voxguard_json_keeps_status_and_text():
    transport = httpx.MockTransport(lambda _: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with Client("http://voxguard", transport=transport) as client, pytest.raises(VoxguardError) as caught:
        client.health()
    assert (caught.value.status, caught.value.code) == (502, "http_502")
    assert caught.value.detail == "<html>Bad Gateway</html>"


def test_a_read_timeout_is_not_retried(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer in time", request=request)

    slept: list[float] = []
    monkeypatch.setattr("voxguard.client.sleep", slept.append)
    transport = httpx.MockTransport(handler)
    with Client("http://voxguard", transport=transport) as client, pytest.raises(VoxguardError) as caught:
        client.health()
    assert (
        not slept and caught.value.code == "timeout" and isinstance(caught.value.__cause__, httpx.ReadTimeout)
    )


async def test_async_retries_and_concurrency_limit():
    in_flight = peak = 0
    refused_once: set[bytes] = set()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        upload = re.search(rb"upload-\d+", await request.aread()).group()
        if upload not in refused_once:  # every upload is refused once with Retry-After: 0, then scored
            refused_once.add(upload)
            return refusal("0")
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json=EXAMPLE)

    async with AsyncClient("http://voxguard", transport=httpx.MockTransport(handler)) as client:
        out = await client.predict_many([f"upload-{i}".encode() for i in range(10)], concurrency=3)
    assert all(isinstance(o, PredictResponse) for o in out) and len(out) == 10
    assert len(refused_once) == 10 and 1 < peak <= 3
