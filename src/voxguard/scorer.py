"""What scores windows: the one contract between a model and whoever feeds it windows.

:class:`Scorer` is all that ``pipeline.Pipeline.run`` (``voxguard predict``), the evaluation runner and
the serving batcher ask of a model: ``(B, T)`` float32 windows in, one margin each out. A
:class:`ScoringModel` is a scorer that a serving engine can also load, warm up and describe; both
``inference.Detector`` (a network on a device) and ``serving.simulated.SimulatedDetector`` are one.

No torch here (``ModelInfo`` is only named for type checkers), so the layers that merely call a scorer
do not load the model stack by importing this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .inference import ModelInfo


class Scorer(Protocol):
    """``(B, T)`` float32 windows -> ``(B,)`` margins, positive for bona fide speech."""

    def scores(self, windows: np.ndarray) -> np.ndarray: ...


class Device(Protocol):
    """What an engine reads of a model's device: its kind (``cpu``, ``cuda``, ``simulated``)."""

    @property
    def type(self) -> str: ...


class ScoringModel(Scorer, Protocol):
    """A scorer as a serving engine uses it: what it is, where it runs, and how to warm it up."""

    @property
    def info(self) -> ModelInfo:
        """What is loaded, for ``/v1/models`` and the front-ends' catalogue."""
        ...

    @property
    def device(self) -> Device: ...

    @property
    def window(self) -> int:
        """Samples per window (``T``)."""
        ...

    @property
    def pads_to_buckets(self) -> bool:
        """Whether a forward of ``n`` windows computes ``inference.bucket_size(n)`` (CUDA graphs): the
        batcher then chooses between those shapes by their measured times."""
        ...

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Run each batch size once before serving; returns the seconds it took."""
        ...
