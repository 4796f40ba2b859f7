"""A benchmark-only accelerator: forwards that take a chosen time and return a fixed score.

``VOXGUARD_ENGINE=simulated`` with ``VOXGUARD_SIMULATED_MS="A,B"`` replaces every model by this stand-in:
a forward of n windows sleeps ``A + B * bucket(n)`` milliseconds, as a CUDA-graph replay of the padded
batch would take on the GPU being imitated, and returns the same score for every window. ``time.sleep``
releases the GIL as a graph replay does, so the event loop and the decoding threads run meanwhile. It
loads no weights and touches no GPU, which is the point: anyone can measure the serving stack, or plan
capacity for a given device, on any machine. It is never a default, it logs a warning when it loads, and
``/v1/models`` names it.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..inference import ModelInfo, bucket_size
from ..model.locate import REGISTRY

logger = logging.getLogger(__name__)

# An H200 running the bf16 engine with CUDA graphs, measured (docs/benchmarks.md): 0.9 ms per replay plus
# 0.68 ms per window of the padded batch.
H200_BF16_MS = (0.9, 0.68)
# The margin every simulated window gets: clearly human, so verdicts are REAL and responses full-sized.
SIMULATED_MARGIN = 8.0


class _Device:
    """What the service reads of a detector's device: only its type, which sets the batch limit."""

    type = "simulated"

    def __str__(self) -> str:
        return "simulated"


class SimulatedDetector:
    """Stands in for :class:`voxguard.inference.Detector` wherever the service uses one: a
    :class:`voxguard.scorer.ScoringModel` too."""

    def __init__(self, name: str, base_ms: float, per_window_ms: float) -> None:
        if name not in REGISTRY:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
        if base_ms < 0 or per_window_ms < 0:
            raise ValueError(f"simulated times must not be negative, got {base_ms}, {per_window_ms}")
        self.base_s = base_ms / 1000.0
        self.per_window_s = per_window_ms / 1000.0
        self.device = _Device()
        config = REGISTRY[name].config
        self.info = ModelInfo(
            name=name,
            architecture="simulated",
            parameters=0,
            sha256="",
            path="",
            device=str(self.device),
            engine="simulated",
            config=config,
            cuda_graphs=False,
            score_offset=REGISTRY[name].score_offset,
            score_scale=REGISTRY[name].score_scale,
            note=(
                f"SIMULATED: no model runs; a forward of n windows sleeps {base_ms:g} + {per_window_ms:g} x "
                "bucket(n) ms and returns a fixed score. For benchmarks only."
            ),
        )
        self.window = config.nb_samp
        logger.warning("model %s is SIMULATED (%s): its verdicts mean nothing", name, self.info.note)

    @property
    def name(self) -> str:
        return self.info.name

    pads_to_buckets = True

    def forward_s(self, n: int) -> float:
        """The time a forward of ``n`` windows takes: a replay of the padded batch."""
        return self.base_s + self.per_window_s * bucket_size(n)

    def scores(self, windows: np.ndarray) -> np.ndarray:
        if windows.ndim != 2 or windows.shape[1] != self.window:
            raise ValueError(f"expected windows of shape (B, {self.window}), got {windows.shape}")
        time.sleep(self.forward_s(len(windows)))
        return np.full(len(windows), SIMULATED_MARGIN, dtype=np.float32)

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> float:
        start = time.perf_counter()
        for size in batch_sizes:
            self.scores(np.zeros((size, self.window), dtype=np.float32))
        return time.perf_counter() - start
