"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT_PORT = 8000  # voxguard serve's and make run's


@pytest.fixture(scope="session", autouse=True)
def default_port_taken() -> Iterator[None]:
    """Hold the default port for the whole session, as a developer's ``make run`` often does: a test that
    relies on it (a ``serve`` without ``--port``) then fails every time, not only beside a running server.
    Already taken (by that server), it stays so."""
    with socket.socket() as holder:
        with contextlib.suppress(OSError):
            holder.bind(("127.0.0.1", DEFAULT_PORT))
            holder.listen()
        yield


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The public speech samples (``VOXGUARD_SAMPLES_DIR``, default ``<repo>/../shared/samples``).

    A missing directory fails the test instead of skipping it, so a broken checkout cannot pass quietly.
    """
    default = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
    path = Path(os.environ.get("VOXGUARD_SAMPLES_DIR", default))
    if not path.is_dir():
        pytest.fail(f"sample directory {path} does not exist; set VOXGUARD_SAMPLES_DIR to the samples folder")
    return path


@pytest.fixture(scope="session")
def checkpoint_dir() -> Path:
    """Official AASIST weights (``VOXGUARD_CHECKPOINT_DIR``, default ``../shared/aasist``); never skipped."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "aasist"
    path = Path(os.environ.get("VOXGUARD_CHECKPOINT_DIR", default))
    if not (path / "AASIST.pth").is_file():
        pytest.fail(f"no AASIST.pth in {path}; set VOXGUARD_CHECKPOINT_DIR to the folder holding the weights")
    return path


@pytest.fixture(scope="session")
def golden(checkpoint_dir: Path) -> dict:
    """Inputs and outputs of the official implementation (golden.npz beside the weights)."""
    import numpy as np

    with np.load(checkpoint_dir / "golden.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def device():
    """``VOXGUARD_TEST_DEVICE`` (default cpu); `make bench-gpu` reruns model tests on cuda with it."""
    import torch

    name = os.environ.get("VOXGUARD_TEST_DEVICE", "cpu")
    if name.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # golden tolerances assume full fp32
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(name)


@pytest.fixture(scope="session")
def detector_factory(checkpoint_dir: Path, device):
    """Build each (model, engine) Detector once per test session; loading is the slow part."""
    from voxguard.inference import Detector

    cache: dict = {}

    def make(model: str = "aasist", engine: str = "eager"):
        if (model, engine) not in cache:
            cache[model, engine] = Detector.load(
                model, checkpoint_dir=checkpoint_dir, engine=engine, device=str(device)
            )
        return cache[model, engine]

    return make


@pytest.fixture(scope="module", params=["single", "split"])
def serving_mode(request: pytest.FixtureRequest):
    """Run a module's servers (``servers.live_server``) in each wiring in turn: one process, and the
    engine + front-ends split (shared slots and the control socket; see ``servers.SplitServer``)."""
    import servers

    servers.MODE = request.param
    yield request.param
    servers.MODE = "single"
