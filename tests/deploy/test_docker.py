"""docker/Dockerfile, .dockerignore, the health-check script and the Makefile targets.

No Docker engine runs here, so the image is never built in these tests. What can be checked is: the
Dockerfile passes hadolint and keeps its promises (CUDA of the pinned torch, non-root, health check,
read-only-friendly environment), and the server itself runs with that environment on a root file
system that is read-only except one tmpfs standing for /tmp, as the container's would be.
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import subprocess
import sys
import time
import tomllib

import httpx
import pytest
import torch
from shipped import (
    DOCKER,
    REPO,
    dockerfile_instructions,
    dockerfile_stages,
    image_env,
    settings_variables,
    tool,
)

from servers import free_port, live_server

HEALTHCHECK = DOCKER / "healthcheck.py"


def test_hadolint_is_clean():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", DOCKER / "Dockerfile"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_waiver_names_its_rule_and_says_why():
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    waivers = [i for i, line in enumerate(lines) if "hadolint ignore=" in line]
    assert waivers, "the Dockerfile waives DL3006/DL3008 explicitly"
    for i in waivers:
        rules = re.search(r"ignore=([\w,]+)", lines[i]).group(1).split(",")
        reason = lines[i - 1]
        assert reason.startswith("#") and "ignore=" not in reason, f"line {i + 1}: no reason above the waiver"
        above = "\n".join(lines[max(0, i - 3) : i])
        assert all(rule in above for rule in rules), f"line {i + 1}: the reason does not name {rules}"


def test_base_image_matches_the_cuda_of_the_pinned_torch():
    (cuda_image,) = [a.split("=", 1)[1] for k, a in dockerfile_instructions() if a.startswith("CUDA_IMAGE=")]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu24\.04", cuda_image)
    assert match, cuda_image
    assert f"{match.group(1)}.{match.group(2)}" == torch.version.cuda  # 13.0 for torch 2.14.1+cu130


def test_torch_pins_match_pyproject():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    args = dict(a.split("=", 1) for k, a in dockerfile_instructions() if k == "ARG" and "=" in a)
    assert f"torch=={args['TORCH_VERSION']}" in dependencies
    assert f"torchaudio=={args['TORCHAUDIO_VERSION']}" in dependencies


def test_image_is_multi_stage_non_root_with_health_check_and_port():
    stages = dockerfile_stages()
    assert {"os-gpu", "os-cpu", "build", "weights", "runtime"} <= set(stages)
    runtime = dict(stages[list(stages)[-1]][1])  # the last stage is the default target
    assert list(stages)[-1] == "runtime"
    user = runtime["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "runs as a numeric non-root user (Kubernetes can check it)"
    assert runtime["EXPOSE"] == "8000"
    assert "/opt/voxguard/healthcheck.py" in runtime["HEALTHCHECK"]
    assert "--start-period" in runtime["HEALTHCHECK"], "loading the models takes a while"
    copies = [a for k, a in stages["build"][1] if k == "RUN" and "pip install" in a]
    assert not any("[dev]" in a or "-e " in a for a in copies), "the package without dev extras, not editable"
    weights = " ".join(a for _, a in stages["weights"][1])
    assert "voxguard weights" in weights and "baked)" in weights and "mounted)" in weights


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_image_environment(variant):
    env = image_env(variant)
    assert env["VOXGUARD_DEVICE"] == {"gpu": "cuda", "cpu": "cpu"}[variant]
    assert env["VOXGUARD_MAX_BATCH_SIZE"] == {"gpu": "64", "cpu": "16"}[variant]
    assert env["VOXGUARD_HOST"] == "0.0.0.0"
    assert env["VOXGUARD_CHECKPOINT_DIR"] == "/opt/voxguard/checkpoints"
    for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert env[name].startswith("/tmp"), f"{name} must point into the writable /tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    unknown = {k for k in env if k.startswith("VOXGUARD_")} - settings_variables()
    assert not unknown, f"not settings (a typo would be silently ignored): {unknown}"


def test_dockerignore_keeps_weights_keys_and_environments_out_but_not_the_sources():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (".git", ".venv", "checkpoints/*.pth", "certs/*.pem", "test-artifacts"):
        assert required in patterns
    copied = [
        token
        for keyword, arguments in dockerfile_instructions()
        if keyword == "COPY" and "--from" not in arguments
        for token in arguments.split()[:-1]
    ]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", "src", project["readme"], *project.get("license-files", [])}
    assert needed <= set(copied), f"the package build needs {needed - set(copied)} in the image"
    for source in copied:
        assert (REPO / source).exists(), source
        ignored = [p for p in patterns if fnmatch.fnmatch(source, p.removeprefix("**/"))]
        assert not ignored, f"{source} is copied but .dockerignore drops it ({ignored})"


def test_make_targets_build_the_variant_and_start_compose():
    def dry_run(*args: str) -> str:
        return subprocess.run(
            ["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=30
        ).stdout

    cpu = dry_run("docker-build", "DOCKER_VARIANT=cpu")
    assert "-f docker/Dockerfile" in cpu and "VARIANT=cpu" in cpu and "-t voxguard:cpu" in cpu
    assert "VARIANT=gpu" in dry_run("docker-build")
    assert "docker compose up" in dry_run("up")
    assert "docker compose --profile scale up" in dry_run("up-scale")


def _healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, HEALTHCHECK, *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_script_fails_when_nothing_listens():
    result = _healthcheck({"VOXGUARD_PORT": str(free_port())})
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_healthcheck_script_sends_the_api_key_when_probes_are_protected(detector_factory):
    detectors = {"aasist": detector_factory("aasist", "fast")}
    with live_server(detectors, api_keys=["k1", "k2"], protect_probes=True) as srv:
        port = str(srv.port)
        assert _healthcheck({"VOXGUARD_PORT": port, "VOXGUARD_API_KEYS": "k1,k2"}).returncode == 0
        assert _healthcheck({"VOXGUARD_PORT": port, "VOXGUARD_API_KEYS": "k1,k2"}, "/ready").returncode == 0
        assert _healthcheck({"VOXGUARD_PORT": port}).returncode == 1  # 401 without the key


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# Inside a private mount namespace: every writable mount except /proc, /sys and /dev becomes read-only,
# and $WRITABLE a fresh tmpfs, as with `read_only: true` + a /tmp tmpfs in compose or
# readOnlyRootFilesystem + an emptyDir in k8s. The tmpfs is not put on /tmp itself: the checkout and its
# .venv may live there (CI clones anywhere), and the server must still find them.
_READ_ONLY_ROOT = r"""
set -eu
for m in $(awk '$4 ~ /(^|,)rw(,|$)/ {print $2}' /proc/self/mounts); do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) ;; *) mount -o remount,bind,ro "$m" ;; esac
done
mount -t tmpfs -o size=512m,mode=1777 tmpfs "$WRITABLE"
if touch /voxguard-write-probe 2>/dev/null; then echo "root file system still writable" >&2; exit 99; fi
if touch "$(dirname "$WRITABLE")/write-probe" 2>/dev/null; then echo "tmp dir still writable" >&2; exit 99; fi
exec "$@"
"""


@pytest.mark.slow
def test_server_runs_on_a_read_only_root_with_the_image_environment(
    checkpoint_dir, samples_dir, tmp_path, device
):
    """The image's ENV, the root file system read-only and /tmp a tmpfs: load, serve, drain.

    The CPU image's ENV here; the GPU image's (device cuda, batch 64) with VOXGUARD_TEST_DEVICE=cuda.
    """
    if os.geteuid() != 0:
        pytest.fail("this test makes a read-only mount namespace (unshare + mount) and must run as root")
    port = free_port()
    writable = tmp_path / "tmpfs"  # stands for the image's /tmp
    writable.mkdir()
    image = image_env("gpu" if device.type == "cuda" else "cpu")
    env = {
        **os.environ,
        **{k: str(writable) + v[len("/tmp") :] if v.startswith("/tmp") else v for k, v in image.items()},
        "WRITABLE": str(writable),
        "PATH": os.environ["PATH"],  # the image's is /opt/venv/bin:$PATH
        "VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir),
        "VOXGUARD_HOST": "127.0.0.1",
        "VOXGUARD_PORT": str(port),
        "VOXGUARD_THREADS": "1",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *("unshare", "--mount", "--propagation", "private", "sh", "-c", _READ_ONLY_ROOT, "sh"),
                *(sys.executable, "-m", "voxguard.cli", "serve"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while not _ready(url):
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not ready in 90 s:\n{log.read_text()}"
            time.sleep(0.2)
        assert _healthcheck({"VOXGUARD_PORT": str(port)}).returncode == 0
        clip = (samples_dir / "p225_001_mic1.flac").read_bytes()
        response = httpx.post(f"{url}/v1/predict", files={"file": ("a.flac", clip)}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["prediction"] in ("REAL", "FAKE")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "Read-only file system" not in log.read_text()
