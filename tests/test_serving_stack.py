"""The serving stack apart from the model: the simulated accelerator, the service behind its Engine
interface (in process, no weights), settings as flags, refusals before decoding, and ``bench serve``."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client import generate_latest

from voxguard import pipeline as pipeline_module
from voxguard.api.app import create_app
from voxguard.audio.options import WINDOW, AudioOptions
from voxguard.benchmarks import serve_bench
from voxguard.cli.parser import build_parser
from voxguard.model.locate import spec_of
from voxguard.scoring import Rule
from voxguard.serving import wiring
from voxguard.serving.engine import LocalEngine
from voxguard.serving.errors import Overloaded, QueueFull
from voxguard.serving.service import PredictionService
from voxguard.serving.simulated import SIMULATED_MARGIN, SimulatedDetector
from voxguard.serving.telemetry import Metrics
from voxguard.settings import (
    BatchingSettings,
    HttpSettings,
    ServiceSettings,
    Settings,
    settings_from_environment,
)


def wav(samples: int = WINDOW) -> bytes:
    """One model window of a 140 Hz tone (enough "speech" for a verdict) as a 16-bit WAV."""
    t = np.arange(samples) / 16000
    buf = io.BytesIO()
    tone = (0.2 * np.sin(2 * np.pi * 140 * t)).astype(np.float32)
    sf.write(buf, tone, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for something the service does in its own time (decoding runs in a pool, so a fixed sleep
    is a race on a slow machine)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def simulated_service(
    settings: Settings, base_ms: float = 0.0, per_window_ms: float = 0.0
) -> PredictionService:
    detectors = {"aasist": SimulatedDetector("aasist", base_ms, per_window_ms)}
    return wiring.in_process(settings, Metrics(), detectors)


def test_a_simulated_forward_sleeps_as_long_as_its_padded_batch_and_says_what_it_is(caplog):
    with caplog.at_level(logging.WARNING, logger="voxguard.serving.simulated"):
        detector = SimulatedDetector("aasist", 2.0, 0.5)
    assert any("SIMULATED" in r.message for r in caplog.records)  # loud in the log
    assert detector.forward_s(3) == pytest.approx((2.0 + 0.5 * 4) / 1000)  # 3 windows run as a batch of 4
    started = time.perf_counter()
    scores = detector.scores(np.zeros((5, WINDOW), dtype=np.float32))
    assert time.perf_counter() - started >= (2.0 + 0.5 * 8) / 1000
    assert scores.tolist() == [SIMULATED_MARGIN] * 5
    assert detector.info.engine == "simulated" and "SIMULATED" in (detector.info.note or "")
    with pytest.raises(ValueError):
        SimulatedDetector("aasist", -1.0, 0.0)


def test_a_padding_device_times_every_batch_shape_at_warm_up_and_the_cpu_pads_nothing():
    settings = Settings(engine="simulated", max_batch_size=16)
    engine = LocalEngine(settings.batching, {"aasist": SimulatedDetector("aasist", 1.0, 0.5)}, Metrics())
    engine.warmup()
    shapes = engine.batcher.shapes
    assert shapes is not None and shapes.sizes == (1, 2, 4, 8, 16)
    for size, seconds in shapes.forward_s.items():  # each shape timed once after warm-up
        # A sleep never ends early but may end late on a loaded machine (2.7 ms late once in a full run).
        assert (1.0 + 0.5 * size) / 1000 - 0.0005 <= seconds <= (1.0 + 0.5 * size) / 1000 + 0.005
    assert shapes.take(9) == 8  # 9 padded to 16 (9 ms) scores fewer windows a second than 8 (5 ms)
    assert engine.window_s == pytest.approx(shapes.forward_s[16] / 16)

    cpu = SimulatedDetector("aasist", 0.0, 0.0)
    cpu.pads_to_buckets = False  # a CPU detector: forwards of any size, no shapes to choose between
    assert (
        LocalEngine(Settings(engine="simulated").batching, {"aasist": cpu}, Metrics()).batcher.shapes is None
    )


def test_a_serving_process_takes_what_it_loaded_out_of_the_collectors_view():
    """``settle_gc`` (called by every serving process once started), in a process of its own so this
    one keeps its collector as it was."""
    code = (
        "import gc; import voxguard.api.app\n"
        "from voxguard.process_tuning import settle_gc\n"
        "before = gc.get_freeze_count(); settle_gc()\n"
        "print(before, gc.get_freeze_count(), *gc.get_threshold())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, frozen, young, middle, old = (int(x) for x in proc.stdout.split())
    assert before == 0 and frozen > 10_000  # the app's modules, FastAPI, pydantic, numpy...
    assert (young, middle, old) == (10_000, 10, 10)


def test_the_simulated_engine_is_never_the_default():
    assert Settings().engine != "simulated"


async def test_the_api_runs_in_process_on_a_simulated_engine_without_weights(tmp_path):
    """The real routes, middleware and service over an engine that loads nothing: API tests need no
    model files (the checkpoint folder here does not even exist) and no server process."""
    settings = Settings(checkpoint_dir=tmp_path / "none", engine="simulated")
    app = create_app(settings, simulated_service(settings))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://x") as c,
    ):
        answer = await c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav"})
        models = (await c.get("/v1/models")).json()["models"]
        assert (await c.get("/ready")).status_code == 200
    assert answer.status_code == 200, answer.text
    body = answer.json()
    official = spec_of("aasist")  # a simulated model is judged by the rule of the model it stands in for
    assert body["prediction"] == "REAL" and body["windows"][0]["score"] == pytest.approx(
        (SIMULATED_MARGIN + official.score_offset) * official.score_scale
    )
    assert models[0]["engine"] == "simulated" and "SIMULATED" in models[0]["note"]


@pytest.mark.parametrize("opentelemetry", [False, True])
async def test_fastapi_opentelemetry_is_opt_in(tmp_path, monkeypatch, opentelemetry):
    """FastAPI looks the global OpenTelemetry providers up on every request (7 % of a front-end's time
    with nothing configured); voxguard does only when asked (``VOXGUARD_OPENTELEMETRY``)."""
    from opentelemetry import trace

    lookups = []
    real = trace.get_tracer_provider
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: lookups.append(1) or real())
    settings = Settings(checkpoint_dir=tmp_path / "none", engine="simulated", opentelemetry=opentelemetry)
    app = create_app(settings, simulated_service(settings))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c,
    ):
        answer = await c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav"})
    assert answer.status_code == 200
    assert bool(lookups) is opentelemetry


class GatedDetector(SimulatedDetector):
    """A simulated model whose forwards, once ``armed``, wait for ``release``: the test decides when
    a forward is running and when it ends."""

    def __init__(self) -> None:
        super().__init__("aasist", 0.0, 0.0)
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def scores(self, windows: np.ndarray) -> np.ndarray:
        if self.armed:
            self.entered.set()
            self.release.wait(60)
        return super().scores(windows)


def test_a_full_server_refuses_before_decoding(monkeypatch):
    """Decoding is the expensive part of a request on a fast device; a refusal must not pay for it."""

    def decode_must_not_run(*args, **kwargs):
        raise AssertionError("decoded a request that was going to be refused")

    async def scenario() -> None:
        settings = Settings(queue_size=1)
        gated = GatedDetector()
        service = wiring.in_process(settings, Metrics(), {"aasist": gated})
        await service.start()
        gated.armed = True
        try:
            first = asyncio.ensure_future(service.predict(wav(), None, time.monotonic()))
            await until(gated.entered.is_set)  # its window is in the forward; the queue is empty
            second = asyncio.ensure_future(service.predict(wav(), None, time.monotonic()))
            await until(lambda: service.engine.depth("aasist") == 1)  # waiting in the one slot
            with monkeypatch.context() as patch:
                patch.setattr(pipeline_module, "prepare", decode_must_not_run)
                with pytest.raises(QueueFull):
                    await service.predict(wav(), None, time.monotonic())
            gated.release.set()
            await asyncio.gather(first, second)
            counted = generate_latest(service.metrics.registry).decode()
            assert 'voxguard_rejected_total{reason="queue_full"} 1.0' in counted
        finally:
            gated.release.set()
            await service.stop()

    asyncio.run(scenario())


class CpuLikeDetector(SimulatedDetector):
    """A simulated CPU: forwards of any size, each window costing the same (no padded buckets)."""

    pads_to_buckets = False

    def forward_s(self, n: int) -> float:
        return self.base_s + self.per_window_s * n


def test_a_batch_on_an_idle_server_is_one_piece_of_work_and_gets_every_answer():
    """Twelve files of 10 windows at 20 ms a window (2.4 s of work), with a 0.2 s request timeout. Scored
    file by file, each deadline covered its own windows only and the batch's earlier files counted as a
    queue ahead of it, so most were refused (`overloaded`) on an idle server; as one piece of work with
    one deadline for all 120 windows, every file gets its answer."""

    async def scenario() -> None:
        settings = Settings(engine="simulated", request_timeout_s=0.2, max_batch_size=4)
        detector = CpuLikeDetector("aasist", 0.0, 20.0)
        service = wiring.in_process(settings, Metrics(), {"aasist": detector})
        await service.start()
        try:
            files = [wav(22 * 16000)] * 12  # 22 s each: 10 windows
            results = await service.predict_batch(
                [*files[:6], b"not audio", *files[6:]], None, time.monotonic()
            )
            assert [type(r).__name__ for r in results] == ["Prediction"] * 6 + ["AudioError"] + [
                "Prediction"
            ] * 6
            assert [len(r.verdict.windows) for r in results if not isinstance(r, Exception)] == [10] * 12
            assert all(
                r.verdict.decision.score
                == pytest.approx(service.pipelines["aasist"].rule.calibrate(np.array([SIMULATED_MARGIN]))[0])
                for r in results
                if not isinstance(r, Exception)
            )
            assert (
                'voxguard_rejected_total{reason="overloaded"}'
                not in generate_latest(service.metrics.registry).decode()
            )

            # Busy: work queued ahead that the batch cannot finish behind is refused as a whole, up front.
            ahead = asyncio.ensure_future(service.predict(wav(300 * 16000), None, time.monotonic()))
            await until(lambda: service.engine.depth("aasist") > 0)  # decoded and queued
            started = time.monotonic()
            with pytest.raises(Overloaded):
                await service.predict_batch(files[:2], None, time.monotonic() - 30)  # arrived long ago
            assert time.monotonic() - started < 1.0
            ahead.cancel()
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_every_setting_is_a_serve_flag_validated_as_its_variable():
    parser = build_parser(Settings())
    serve = next(a for a in parser._actions if a.dest == "command").choices["serve"]
    flags = {option for action in serve._actions for option in action.option_strings}
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in flags, name
    args = parser.parse_args(
        [
            "serve",
            "--request-timeout-s",
            "12",
            "--api-keys",
            "a,b",
            "--no-cuda-graphs",
            "--simulated-ms",
            "1,2",
        ]
    )
    assert (args.request_timeout_s, args.api_keys, args.cuda_graphs) == (12.0, ["a", "b"], False)
    assert args.simulated_ms == (1.0, 2.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--min-reliable-s", "-1"])


def test_the_flat_variables_reach_each_part_in_its_section(monkeypatch):
    """People set flat ``VOXGUARD_*`` variables; each part is handed its section of them (settings.py)."""
    variables = {
        "MAX_BATCH_SIZE": "8",
        "QUEUE_SIZE": "99",
        "API_KEYS": "a,b",
        "STREAM_IDLE_S": "3",
        "THRESHOLD": "0.7",
        "SCORE_OFFSET": "1.5",
        "SCORE_SCALE": "0.5",
        "HOP": "16000",
        "COMPILE": "true",
        "MODELS": "aasist,aasist-l",
        "CHECKPOINT": "x.pt",
        "ENGINE": "simulated",
    }
    for name, value in variables.items():
        monkeypatch.setenv(f"VOXGUARD_{name}", value)
    settings = settings_from_environment()
    assert settings.batching == BatchingSettings(max_batch_size=8, max_wait_ms=5.0, queue_size=99)
    assert settings.http.api_keys == ("a", "b") and settings.http.stream_idle_s == 3.0
    assert (
        settings.rule.for_model(6.0, 1.0) == settings.rule.for_model(0.0, 0.1) == Rule(0.7, 1, 2.0, 1.5, 0.5)
    )
    assert settings.service.audio == settings.audio and settings.audio.hop == 16000
    assert settings.service.rule == settings.rule and settings.service.queue_size == 99
    loading = settings.loading
    assert loading.models == ("aasist", "aasist-l") and loading.checkpoint is None  # one model's file
    assert loading.detector.compile_model and loading.simulated_ms == (0.9, 0.68)
    assert Settings(models=["aasist"], checkpoint="x.pt").loading.checkpoint.name == "x.pt"
    assert Settings(engine="fast").loading.simulated_ms is None
    assert [BatchingSettings(0, 5.0, 1).batch_size_for(d) for d in ("cpu", "cuda")] == [16, 64]
    for section in (AudioOptions, BatchingSettings, ServiceSettings, HttpSettings):  # nothing renamed
        names = {f.name for f in dataclasses.fields(section)} - {"audio", "rule"}
        assert names <= set(Settings.model_fields), section


def test_bench_serve_warns_when_the_generator_is_too_close_to_the_servers():
    run = {"throughput_rps": 0.0, "p50_ms": 1.0, "p99_ms": 2.0, "non_2xx": 0, "socket_errors": 0}
    row = {**run, "frontends": 1, "ratio_to_floor": 0.5, "mean_batch_size": 8.0}
    report = {
        "load_generator": "wrk 1 thread",
        "connections": 16,
        "duration_s": 2,
        "body": "wav",
        "engine": "simulated",
        "device": "simulated",
        "generator": {**run, "throughput_rps": 2000.0},
        "floor": {**run, "throughput_rps": 1000.0},
        "by_frontends": [{**row, "throughput_rps": 500.0}],
        "frontends": 1,
        "ratio_to_floor": 0.5,
    }
    close = serve_bench.render_serve({**report, "generator_margin": 2.0, "generator_margin_ok": False})
    assert "2.0x faster than the fastest server" in close
    assert "warning: that is under 3x" in close
    wide = serve_bench.render_serve({**report, "generator_margin": 5.0, "generator_margin_ok": True})
    assert "warning" not in wide


@pytest.mark.slow
def test_bench_serve_measures_the_floor_the_generator_and_voxguard_in_one_run(checkpoint_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxguard.cli",
            "bench",
            "serve",
            *("--engine", "simulated", "--simulated-ms", "0.9,0.68"),
            *("--duration", "2", "--connections", "16", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in ("generator", "floor", "voxguard"):
        assert report[key]["throughput_rps"] > 0 and report[key]["non_2xx"] == 0, (key, report[key])
        assert report[key]["socket_errors"] == 0, (key, report[key])
    assert report["engine"] == "simulated" and report["device"] == "simulated"
    assert [row["frontends"] for row in report["by_frontends"]] == [1, 2]  # the default comparison
    for row in report["by_frontends"]:
        assert row["throughput_rps"] > 0 and row["non_2xx"] == row["socket_errors"] == 0, row
        assert row["ratio_to_floor"] == pytest.approx(
            row["throughput_rps"] / report["floor"]["throughput_rps"], rel=1e-2
        )
    best = max(report["by_frontends"], key=lambda row: row["throughput_rps"])
    assert report["frontends"] == best["frontends"] and report["ratio_to_floor"] == best["ratio_to_floor"]
    # nginx answering `{}` outruns any Python server; how far depends on the machine, so the report says
    # whether the margin is enough to trust, and the text says so when it is not.
    fastest = max(report["floor"]["throughput_rps"], best["throughput_rps"])
    margin = report["generator"]["throughput_rps"] / fastest
    assert report["generator_margin"] == pytest.approx(margin, abs=0.01)
    assert report["generator_margin"] > 1.0
    assert report["generator_margin_ok"] == (report["generator_margin"] >= serve_bench.MIN_GENERATOR_MARGIN)
    assert report["device_capacity_rps"] == pytest.approx(64 / ((0.9 + 0.68 * 64) / 1000), rel=1e-3)
    assert report["device_ratio_to_floor"] == pytest.approx(
        report["device_capacity_rps"] / report["floor"]["throughput_rps"], rel=1e-2
    )
