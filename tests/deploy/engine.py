"""A Docker engine for the tests marked ``docker``: every call with its own timeout, and everything a
session makes (containers, compose projects, images, the base's root file system) removed at the end.

Nothing here skips: without a daemon, Compose, debootstrap or root, the tests fail and say what is
missing. The daemon is expected to run without a bridge network (scripts/start_dockerd.sh), so every
container uses host networking and no network is ever created.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from shipped import REPO, compose_binary, go_seconds

# Debian release of the local base image: its python3 (3.11) takes the same wheels as CI's venv.
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CHECKPOINTS = "/opt/voxguard/checkpoints"
# The gpu variant: PyPI's torch is the CUDA build and runs on the CPU too (PyTorch's CPU index cannot
# be reached from CI). A mirror: VOXGUARD_TEST_TORCH_INDEX_URL.
TORCH_INDEX_URL = os.environ.get("VOXGUARD_TEST_TORCH_INDEX_URL", "https://pypi.org/simple")


class Engine:
    """The ``docker`` command line with this session's Compose plugin and the legacy builder."""

    def __init__(self, workdir: Path) -> None:
        self.session = uuid.uuid4().hex[:8]
        self.label = f"voxguard-test={self.session}"
        self.workdir = workdir
        plugins = workdir / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(compose_binary())
        # The legacy builder, as on an engine without buildx: it builds every stage of a Dockerfile.
        self.env = {**os.environ, "DOCKER_CONFIG": str(plugins.parent), "DOCKER_BUILDKIT": "0"}
        self.projects: list[str] = []
        self._images_before: set[str] = set()

    def __call__(self, *args: object, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["docker", *map(str, args)]
        try:
            result = subprocess.run(
                command, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"`{' '.join(command)}` took over {timeout} s") from exc
        if check and result.returncode != 0:
            output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            raise AssertionError(f"`{' '.join(command)}` exited {result.returncode}:\n{output}")
        return result

    def start(self) -> None:
        """Fail, with what to do, unless a daemon answers and Compose runs as its plugin."""
        if shutil.which("docker") is None:
            pytest.fail("no docker command: apt-get install docker.io (.ci/run does)")
        info = self("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
        if info.returncode != 0:
            where = os.environ.get("DOCKER_HOST", "the default socket")
            pytest.fail(
                f"no Docker daemon answers at {where}: {info.stderr.strip()}\n"
                "start one with scripts/start_dockerd.sh and export the DOCKER_HOST it prints (.ci/run does)"
            )
        self("compose", "version", timeout=30)
        self._images_before = self._image_ids()

    def _image_ids(self) -> set[str]:
        return set(self("images", "-aq", "--no-trunc", timeout=60).stdout.split())

    def project(self, name: str) -> str:
        """A compose project name of this session; close() removes whatever it leaves."""
        project = f"voxguard-test-{self.session}-{name}"
        self.projects.append(project)
        return project

    def import_rootfs(self, rootfs: Path, tag: str) -> None:
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            result = subprocess.run(
                ["docker", "import", "-", tag],
                stdin=tar.stdout,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            tar.stdout.close()
            tar.wait(timeout=60)
        assert result.returncode == 0 and tar.returncode == 0, result.stderr

    def close(self) -> None:
        """Remove this session's containers and every image made since start(); fail if any is left."""
        labels = [self.label, *(f"com.docker.compose.project={p}" for p in self.projects)]
        for label in labels:
            containers = self("ps", "-aq", "--filter", f"label={label}", timeout=60).stdout.split()
            if containers:
                self("rm", "-f", *containers, timeout=120)
        # Children before parents: a tagged image takes its untagged build layers with it; a failed
        # build's layers go in later rounds.
        for _ in range(10):
            new = self._image_ids() - self._images_before
            if not new:
                return
            for image in new:
                self("rmi", "-f", image, timeout=300, check=False)
        raise AssertionError(f"images left behind: {sorted(self._image_ids() - self._images_before)}")


def debian_mirror() -> str:
    """The host's apt mirror for Debian (deb822 ``URIs:`` or a ``deb URI suite`` line), else Debian's."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "security" not in fields.get("URIs", ""):
                return fields["URIs"].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        match = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", legacy.read_text(), re.M)
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


def make_base_image(engine: Engine) -> str:
    """A Debian image made with debootstrap (no registry needed), with the host's CA bundle for pip.

    pip in the container reaches PyPI as the host does, through a TLS proxy whose CA only the host's
    bundle has; Debian's venv pip does not read the system bundle, so /etc/pip.conf names it. Only
    this test base carries them, never the shipped Dockerfile.
    """
    if os.geteuid() != 0:
        pytest.fail("debootstrap must run as root")
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        pytest.fail("no debootstrap: apt-get install debootstrap (.ci/run does)")
    rootfs = engine.workdir / "rootfs"
    command = [debootstrap, "--variant=minbase", SUITE, str(rootfs), debian_mirror()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    debian = f"voxguard-test/debian:{engine.session}"
    try:
        engine.import_rootfs(rootfs, debian)
    finally:
        shutil.rmtree(rootfs)
    context = engine.workdir / "base"
    context.mkdir()
    shutil.copy(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"), context / "ca.crt")
    (context / "pip.conf").write_text("[global]\ncert = /etc/pip/ca.crt\n")
    (context / "Dockerfile").write_text(
        f"FROM {debian}\nCOPY ca.crt /etc/pip/ca.crt\nCOPY pip.conf /etc/pip.conf\n"
    )
    base = f"voxguard-test/base:{engine.session}"
    engine("build", "--network", "none", "-t", base, context, timeout=300)
    return base


@dataclass(frozen=True)
class Build:
    tag: str
    seconds: float
    size_bytes: int
    log: str


def build(engine: Engine, tag: str, *args: str, timeout: float = 1800) -> Build:
    """``docker build --network host`` of the repository's context; host networking reaches apt and pip."""
    started = time.monotonic()
    result = engine("build", "--network", "host", "--force-rm", *args, "-t", tag, ".", timeout=timeout)
    seconds = time.monotonic() - started
    size = int(engine("image", "inspect", "--format", "{{.Size}}", tag, timeout=60).stdout)
    return Build(tag, seconds, size, result.stdout + result.stderr)


def compose_run_options(service: dict, sources: dict[str, Path]) -> list[str]:
    """``docker run`` options for what Compose does with ``service`` (from ``compose config``):
    read-only root, tmpfs, shared memory, privileges, stop signal and grace, restart policy, environment and
    volumes, a volume's source replaced where ``sources`` names its target. Its ports and GPU
    reservation are left out: the tests use host networking, on a host without a GPU."""
    options = ["--read-only"] if service.get("read_only") else []
    for tmpfs in service.get("tmpfs", []):
        options += ["--tmpfs", tmpfs]
    for opt in service.get("security_opt", []):
        options += ["--security-opt", opt]
    for cap in service.get("cap_drop", []):
        options += ["--cap-drop", cap]
    if "shm_size" in service:
        options += ["--shm-size", str(service["shm_size"])]
    options += ["--stop-signal", service["stop_signal"]]
    options += ["--stop-timeout", str(round(go_seconds(service["stop_grace_period"])))]
    options += ["--restart", service["restart"]]
    for key, value in (service.get("environment") or {}).items():
        options += ["-e", f"{key}={value}"]
    for volume in service["volumes"]:
        source = sources.get(volume["target"], volume["source"])
        options += ["-v", f"{source}:{volume['target']}{':ro' if volume.get('read_only') else ''}"]
    return options
