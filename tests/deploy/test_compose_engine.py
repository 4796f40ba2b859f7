"""``docker compose up --wait`` with the shipped files on a real engine (``make test-docker``).

The root compose.yaml plus the shipped CPU override (docker/compose.cpu.yaml), as a user without a GPU
runs them, plus one test-only override that this machine needs and users do not: host networking
instead of the project's bridge network and published ports (no bridge may be made here), the image
built by this session, the weights from VOXGUARD_CHECKPOINT_DIR and free ports. The ``scale`` profile
runs the same way, with nginx from Debian in an image built here (nginx:alpine cannot be pulled) and
docker/nginx.conf with loopback addresses for the service names, which need the bridge network's DNS.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from engine import CHECKPOINTS, Build, Engine
from shipped import DOCKER, REPO, render_nginx_conf

from servers import free_port

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

SAMPLE = "p225_002_mic1.flac"
SHIPPED = (REPO / "compose.yaml", DOCKER / "compose.cpu.yaml")


def _override(services: dict[str, dict]) -> str:
    """A compose file (YAML; JSON scalars are YAML) that moves each service onto host networking."""
    lines = ["services:"]
    for name, settings in services.items():
        lines += [f"  {name}:", "    network_mode: host", "    ports: !reset []"]
        lines += [f"    {key}: {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


class Project:
    """One compose project of the shipped files plus a test override; ``down`` always runs."""

    def __init__(self, engine: Engine, name: str, override: Path, profiles: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.name = engine.project(name)
        files = [arg for path in (*SHIPPED, override) for arg in ("-f", path)]
        self.prefix = ["compose", "-p", self.name, *files, *(a for p in profiles for a in ("--profile", p))]

    def __call__(self, *args: object, timeout: float) -> str:
        return self.engine(*self.prefix, *args, timeout=timeout).stdout

    def up(self) -> float:
        """Fail before anything is made if Compose would create a network; else up --wait (seconds)."""
        plan = self.engine(
            *self.prefix, "up", "--dry-run", "-d", "--no-build", "--pull", "never", timeout=120
        )
        steps = plan.stdout + plan.stderr
        assert "Container" in steps and "Network" not in steps, steps
        started = time.monotonic()
        self("up", "-d", "--no-build", "--pull", "never", "--wait", "--wait-timeout", "300", timeout=360)
        return time.monotonic() - started

    def down(self) -> tuple[float, dict[str, int]]:
        """``compose down``: its seconds and each container's exit code (from the engine's die events)."""
        since = int(time.time()) - 1
        started = time.monotonic()
        self("down", timeout=180)
        seconds = time.monotonic() - started
        events = self.engine(
            *("events", "--since", since, "--until", int(time.time()) + 1, "--format", "{{json .}}"),
            *("--filter", "type=container", "--filter", "event=die"),
            *("--filter", f"label=com.docker.compose.project={self.name}"),
            timeout=60,
        ).stdout.splitlines()
        exits = {}
        for line in events:
            attributes = json.loads(line)["Actor"]["Attributes"]
            exits[attributes["com.docker.compose.service"]] = int(attributes["exitCode"])
        left = self.engine(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}", timeout=60
        )
        assert left.stdout.split() == [], "compose down removed its containers"
        return seconds, exits

    def health(self) -> dict[str, str]:
        rows = self("ps", "--format", "json", timeout=60).strip()
        # Compose 2.21+ writes one JSON object per line.
        return {row["Service"]: row["Health"] for row in map(json.loads, rows.splitlines())}


def _replica(image: Build, checkpoint_dir: Path, port: int) -> dict:
    return {
        "image": image.tag,
        "environment": {"VOXGUARD_PORT": str(port), "VOXGUARD_THREADS": "1"},
        "volumes": [f"{checkpoint_dir}:{CHECKPOINTS}:ro"],
    }


def _predict(url: str, samples_dir: Path) -> httpx.Response:
    clip = (SAMPLE, (samples_dir / SAMPLE).read_bytes())
    return httpx.post(f"{url}/v1/predict", files={"file": clip}, timeout=120)


def test_compose_up_without_a_gpu_is_healthy_answers_and_downs_cleanly(
    engine, image, checkpoint_dir, samples_dir, tmp_path, docker_figures
):
    port = free_port()
    override = tmp_path / "host-network.yaml"
    override.write_text(_override({"voxguard": _replica(image, checkpoint_dir, port)}))
    project = Project(engine, "cpu", override)
    try:
        up_s = project.up()
        assert project.health() == {"voxguard": "healthy"}
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health", timeout=10).json()["device"] == "cpu"
        assert httpx.get(f"{url}/ready", timeout=10).status_code == 200
        response = _predict(url, samples_dir)
        assert response.status_code == 200 and response.json()["prediction"] in ("REAL", "FAKE")
    finally:
        down_s, exits = project.down()
    assert exits == {"voxguard": 0}
    docker_figures["compose"] = {"up_wait_s": round(up_s, 1), "down_s": round(down_s, 1)}


@pytest.fixture
def nginx_image(engine: Engine, base_image: str, tmp_path: Path) -> str:
    """nginx (and wget, for the lb's health check) from Debian, on the local base."""
    context = tmp_path / "nginx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends nginx wget"
        " && rm -rf /var/lib/apt/lists/*\n"
    )
    tag = f"voxguard-test/nginx:{engine.session}"
    engine("build", "--network", "host", "--force-rm", "-t", tag, context, timeout=600)
    return tag


def test_scale_profile_puts_two_replicas_behind_nginx(
    engine, image, nginx_image, checkpoint_dir, samples_dir, tmp_path, docker_figures
):
    ports = {"voxguard": free_port(), "voxguard-2": free_port()}
    lb_port = free_port()
    upstreams = [f"127.0.0.1:{p}" for p in ports.values()]
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(upstreams, f"127.0.0.1:{lb_port}"))
    conf.chmod(0o644)
    services = {name: _replica(image, checkpoint_dir, port) for name, port in ports.items()}
    services["lb"] = {
        "image": nginx_image,
        "volumes": [f"{conf}:/etc/nginx/nginx.conf:ro"],
        "healthcheck": {
            "test": ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{lb_port}/health"]
        },
    }
    override = tmp_path / "host-network.yaml"
    override.write_text(_override(services))
    project = Project(engine, "scale", override, profiles=("scale",))
    try:
        up_s = project.up()
        assert project.health() == {"voxguard": "healthy", "voxguard-2": "healthy", "lb": "healthy"}
        url = f"http://127.0.0.1:{lb_port}"
        answers = [_predict(url, samples_dir) for _ in range(6)]
        assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
        log = project("logs", "--no-color", "--no-log-prefix", "lb", timeout=60)
        served_by = {
            json.loads(line)["upstream_addr"]
            for line in log.splitlines()
            if line.startswith("{") and '"/v1/predict"' in line
        }
        assert served_by == set(upstreams), "nginx sent requests to both replicas"
    finally:
        down_s, exits = project.down()
    assert exits == {"voxguard": 0, "voxguard-2": 0, "lb": 0}
    docker_figures["compose_scale"] = {"up_wait_s": round(up_s, 1), "down_s": round(down_s, 1)}
