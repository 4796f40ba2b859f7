"""docker/Dockerfile, .dockerignore, the health-check script and the Makefile targets, without Docker.

The Dockerfile passes hadolint and keeps its promises (one base image, CUDA of the pinned torch, torch
index as a build argument, non-root, health check, read-only-friendly environment); the health check
asks the address the server announces and trusts only voxguard's answer; and the server itself runs
with the image's environment on a root file system that is read-only except one tmpfs standing for
/tmp, as the container's would be. The image itself is built and run by test_docker_engine.py
(``make test-docker``).
"""

from __future__ import annotations

import fnmatch
import json
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
from recorder import VOXGUARD_LIKE_HEALTH, RecordingServer
from shipped import (
    DOCKER,
    REPO,
    compose_config,
    dockerfile_args,
    dockerfile_instructions,
    dockerfile_stages,
    image_env,
    load_yaml,
    settings_variables,
    tool,
)

from servers import ServerProcess, free_port, live_server

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


def test_default_base_image_matches_the_cuda_of_the_pinned_torch():
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu24\.04", dockerfile_args()["BASE_IMAGE"])
    assert match, dockerfile_args()["BASE_IMAGE"]
    assert f"{match.group(1)}.{match.group(2)}" == torch.version.cuda  # 13.0 for torch 2.14.1+cu130


def test_a_build_needs_only_the_one_base_image_it_is_given():
    """Without BuildKit every stage is built, so every external FROM must exist: there is one."""
    stages = dockerfile_stages()
    external = {base for base, _ in stages.values() if base not in stages}
    assert external == {"${BASE_IMAGE}"}


def test_torch_pins_match_pyproject():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    args = dockerfile_args()
    assert f"torch=={args['TORCH_VERSION']}" in dependencies
    assert f"torchaudio=={args['TORCHAUDIO_VERSION']}" in dependencies


def test_torch_index_is_a_build_argument_that_compose_and_make_pass_on():
    (torch_install,) = [a for k, a in dockerfile_stages()["build"][1] if k == "RUN" and "torch==" in a]
    assert '--index-url "${TORCH_INDEX_URL:-$index}"' in torch_install
    assert dockerfile_args()["TORCH_INDEX_URL"] == "", "empty: the variant's own index"
    _compose_and_make_pass_on("TORCH_INDEX_URL", "http://mirror/simple")


def test_package_extras_are_a_build_argument_that_compose_and_make_pass_on():
    """Empty installs the package alone; ``whisper`` installs it with the extra specnet-whisper needs."""
    (install,) = [a for k, a in dockerfile_stages()["build"][1] if k == "RUN" and "/src" in a]
    assert '"/src${EXTRAS:+[$EXTRAS]}"' in install
    assert dockerfile_args()["EXTRAS"] == ""
    expand = 'for EXTRAS in "" whisper; do echo "/src${EXTRAS:+[$EXTRAS]}"; done'
    expanded = subprocess.run(["sh", "-c", expand], capture_output=True, text=True, check=True)
    assert expanded.stdout.split() == ["/src", "/src[whisper]"]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "whisper" in extras
    _compose_and_make_pass_on("EXTRAS", "whisper")


def _compose_and_make_pass_on(arg: str, value: str) -> None:
    """Compose takes build argument ``arg`` from ``VOXGUARD_<arg>``, ``make docker-build`` from
    ``DOCKER_<arg>``."""
    build = load_yaml(DOCKER / "compose.yaml")["x-voxguard"]["build"]
    assert build["args"][arg] == f"${{VOXGUARD_{arg}:-}}"
    make = subprocess.run(
        ["make", "-n", "docker-build", f"DOCKER_{arg}={value}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert f"--build-arg {arg}={value}" in make


def test_runtime_user_is_a_regular_account_with_uid_10001():
    """``useradd --system`` warns for a uid above SYS_UID_MAX (999); 10001 is a regular one."""
    (users,) = [a for k, a in dockerfile_stages()["runtime"][1] if k == "RUN" and "useradd" in a]
    assert "--system" not in users
    assert "--uid 10001 --gid 10001" in users and "groupadd --gid 10001" in users


def test_image_is_multi_stage_non_root_with_health_check_and_port():
    stages = dockerfile_stages()
    assert {"os", "build", "weights", "runtime"} <= set(stages)
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


def test_image_environment():
    env = image_env()
    # The device is found at run time and the batch limit follows it: a GPU image on a host without a
    # GPU must not keep CUDA's 64 (test_docker_engine.py runs it so).
    assert "VOXGUARD_DEVICE" not in env and "VOXGUARD_MAX_BATCH_SIZE" not in env
    assert env["VOXGUARD_HOST"] == "0.0.0.0"
    assert env["VOXGUARD_CHECKPOINT_DIR"] == "/opt/voxguard/checkpoints"
    names = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    for name in (*names, "VOXGUARD_ADDRESS_FILE"):
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
    cpu_compose = compose_config(REPO / "compose.yaml", DOCKER / "compose.cpu.yaml")
    cpu_base = cpu_compose["services"]["voxguard"]["build"]["args"]["BASE_IMAGE"]
    assert f"--build-arg BASE_IMAGE={cpu_base}" in cpu, "the CPU base of compose.cpu.yaml"
    gpu = dry_run("docker-build")
    assert "VARIANT=gpu" in gpu and "BASE_IMAGE" not in gpu, "the Dockerfile's own CUDA base"
    assert "docker compose up" in dry_run("up")
    assert "docker compose -f compose.yaml -f docker/compose.cpu.yaml up" in dry_run("up-cpu")
    assert "docker compose --profile scale up" in dry_run("up-scale")
    assert "pytest -m docker tests/deploy" in dry_run("test-docker")


def _healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, HEALTHCHECK, *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _address_file(tmp_path, port: int, pid: int | None = None) -> dict[str, str]:
    """An address file as ``voxguard serve`` writes it; the environment that points the check at it."""
    path = tmp_path / "address.json"
    path.write_text(json.dumps({"pid": pid or os.getpid(), "url": f"http://127.0.0.1:{port}"}))
    return {"VOXGUARD_ADDRESS_FILE": str(path)}


def test_healthcheck_script_fails_when_nothing_listens(tmp_path):
    result = _healthcheck(_address_file(tmp_path, free_port()))
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_healthcheck_script_fails_before_the_server_announces_its_address(tmp_path):
    with RecordingServer(200, VOXGUARD_LIKE_HEALTH) as decoy:
        result = _healthcheck(
            {"VOXGUARD_ADDRESS_FILE": str(tmp_path / "none.json"), "VOXGUARD_PORT": str(decoy.port)}
        )
    assert result.returncode == 1 and "not listening" in result.stderr
    assert decoy.paths == [], "VOXGUARD_PORT is not where the server listens: never asked"


def test_healthcheck_script_wants_voxguards_answer_not_any_200(tmp_path):
    with RecordingServer(200, b'{"status": "ok"}') as other:
        result = _healthcheck(_address_file(tmp_path, other.port))
    assert other.paths == ["/health"]
    assert result.returncode == 1 and "did not answer as voxguard does" in result.stderr


def test_healthcheck_script_fails_when_the_announcing_process_is_gone(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=10)
    with RecordingServer(200, VOXGUARD_LIKE_HEALTH) as decoy:
        result = _healthcheck(_address_file(tmp_path, decoy.port, pid=gone.pid))
    assert result.returncode == 1 and "has exited" in result.stderr
    assert decoy.paths == []


def test_healthcheck_script_sends_the_api_key_when_probes_are_protected(detector_factory, tmp_path):
    detectors = {"aasist": detector_factory("aasist", "fast")}
    with live_server(detectors, api_keys=["k1", "k2"], protect_probes=True) as srv:
        env = _address_file(tmp_path, srv.port)
        assert _healthcheck({**env, "VOXGUARD_API_KEYS": "k1,k2"}).returncode == 0
        assert _healthcheck({**env, "VOXGUARD_API_KEYS": "k1,k2"}, "/ready").returncode == 0
        assert _healthcheck(env).returncode == 1  # 401 without the key


@pytest.mark.slow
def test_serve_announces_the_port_it_was_given_and_withdraws_it_on_exit(checkpoint_dir, tmp_path):
    """``serve --port N`` with VOXGUARD_PORT naming a voxguard look-alike: the check goes to N only."""
    address = tmp_path / "address.json"
    with RecordingServer(200, VOXGUARD_LIKE_HEALTH) as decoy:
        env = {
            "VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir),
            "VOXGUARD_ADDRESS_FILE": str(address),
            "VOXGUARD_PORT": str(decoy.port),
            "VOXGUARD_THREADS": "1",
            "TMPDIR": str(tmp_path),
        }
        server = ServerProcess(["--models", "aasist", "--device", "cpu"], env)
        try:
            server.wait_ready()
            assert json.loads(address.read_text()) == {"pid": server.proc.pid, "url": server.url}
            check = {"VOXGUARD_ADDRESS_FILE": str(address), "VOXGUARD_PORT": str(decoy.port)}
            assert _healthcheck(check).returncode == 0
            assert _healthcheck(check, "/ready").returncode == 0
            server.terminate()
            assert server.proc.wait(timeout=60) == 0, server.output()
        finally:
            server.close()
        assert decoy.paths == []
    assert not address.exists(), "a stopped server leaves no address behind"
    assert _healthcheck(check).returncode == 1


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

    The device is the test device (cpu; cuda with VOXGUARD_TEST_DEVICE=cuda), as auto would find it.
    """
    if os.geteuid() != 0:
        pytest.fail("this test makes a read-only mount namespace (unshare + mount) and must run as root")
    port = free_port()
    writable = tmp_path / "tmpfs"  # stands for the image's /tmp
    writable.mkdir()
    image = image_env()
    env = {
        **os.environ,
        **{k: str(writable) + v[len("/tmp") :] if v.startswith("/tmp") else v for k, v in image.items()},
        "WRITABLE": str(writable),
        "PATH": os.environ["PATH"],  # the image's is /opt/venv/bin:$PATH
        "VOXGUARD_CHECKPOINT_DIR": str(checkpoint_dir),
        "VOXGUARD_HOST": "127.0.0.1",
        "VOXGUARD_PORT": str(port),
        "VOXGUARD_THREADS": "1",
        "VOXGUARD_DEVICE": str(device),
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
        # As `docker exec` does: in the server's mount namespace, where its /tmp (the tmpfs) is.
        in_namespace = ["nsenter", "--target", str(proc.pid), "--mount", sys.executable, HEALTHCHECK]
        check = subprocess.run(
            in_namespace,
            env={"PATH": os.environ["PATH"], "VOXGUARD_ADDRESS_FILE": env["VOXGUARD_ADDRESS_FILE"]},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
        clip = (samples_dir / "p225_002_mic2.flac").read_bytes()
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
