"""Session fixtures of the tests marked ``docker``: one engine, one base image, one voxguard image.

Only tests that ask for them start anything; ``make test`` deselects those tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from engine import TORCH_INDEX_URL, Build, Engine, build, make_base_image
from shipped import ARTIFACTS


@pytest.fixture(scope="session")
def docker_figures() -> Iterator[dict]:
    """Timings and sizes the tests measure, written to test-artifacts/docker.json at the end."""
    figures: dict = {}
    yield figures
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "docker.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    docker = Engine(tmp_path_factory.mktemp("docker"))
    docker.start()
    try:
        yield docker
    finally:
        docker.close()


@pytest.fixture(scope="session")
def base_image(engine: Engine) -> str:
    return make_base_image(engine)


@pytest.fixture(scope="session")
def image(engine: Engine, base_image: str, docker_figures: dict) -> Build:
    """The shipped Dockerfile, gpu variant, on the local base: the only image the build may use."""
    built = build(
        engine,
        f"voxguard-test/voxguard:{engine.session}",
        *("-f", "docker/Dockerfile", "--build-arg", "VARIANT=gpu"),
        *("--build-arg", f"BASE_IMAGE={base_image}", "--build-arg", f"TORCH_INDEX_URL={TORCH_INDEX_URL}"),
    )
    docker_figures["image"] = {
        "build_s": round(built.seconds, 1),
        "size_gb": round(built.size_bytes / 1e9, 2),
        "variant": "gpu",
        "base": "debian bookworm (debootstrap)",
    }
    return built
