"""The Detector: one loaded network (AASIST or SpecNet) on one device, turning window batches into scores.

Knows nothing about HTTP or queues. A Detector is used by one thread at a time (the batch
worker or the CLI); that is what lets it reuse pinned buffers and never run two forwards at once.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model.aasist import AASIST
from .model.checkpoints import LoadedCheckpoint, load_checkpoint
from .model.config import ModelConfig
from .model.fast import FastAASIST
from .process_tuning import tune_allocator
from .setup_errors import SetupError

logger = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = ("eager", "fast", "bf16")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class DeviceError(SetupError, ValueError):
    """A device name that is malformed, or names a device this machine does not have."""


_DEVICE_HINT = "use --device cpu (VOXGUARD_DEVICE=cpu), or auto to use CUDA only where it is present"


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA on a machine without it is an error."""
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", device):
        raise DeviceError(
            f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}.", _DEVICE_HINT
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} requested but CUDA is not available on this machine.", _DEVICE_HINT
            )
        count = torch.cuda.device_count()
        if torch.device(device).index is not None and torch.device(device).index >= count:
            raise DeviceError(
                f"device {device!r} requested but this machine has {count} CUDA device(s).",
                f"use cuda:0 to cuda:{count - 1}, or cuda for the current one",
            )
    return torch.device(device)


def build_engine(
    model: nn.Module, engine: str, device: torch.device, compile_model: bool = False
) -> nn.Module:
    """The module that computes ``(hidden, logits)`` for an engine name, placed on ``device``.

    The engines are ways of running AASIST; SpecNet is small enough to have one float32 form, which
    every engine name runs."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "eager" or not isinstance(model, AASIST):
        return model.to(device).eval()
    dtype = torch.bfloat16 if engine == "bf16" else torch.float32
    channels_last = device.type == "cpu" or dtype == torch.bfloat16
    layout = torch.channels_last if channels_last else torch.contiguous_format
    module: nn.Module = FastAASIST(model, dtype, channels_last).to(device=device, memory_format=layout)
    if compile_model:
        try:
            module = torch.compile(module, dynamic=False)
        except Exception as exc:  # compile support varies by platform; the uncompiled engine is the fallback
            logger.warning("torch.compile unavailable (%s); using the uncompiled %s engine", exc, engine)
    return module


# The most windows one CPU forward computes; a larger batch runs as several forwards. On a CPU a window
# costs the same at batch 1, 4 or 16, but each adds ~190 MiB of activations, and the tuned allocator's
# heap fragments over mixed batch sizes: a real-AASIST CPU server under a changing load grew past 5.8 GiB
# and kept growing, against 1.1 GiB flat in forwards of 4, at the same speed (docs/benchmarks.md).
CPU_FORWARD_WINDOWS = 4


def bucket_size(n: int) -> int:
    """The next power of two: on CUDA every new batch shape costs a cuDNN autotuning pass, so a
    dynamic batcher's sizes 1..64 are padded to 7 shapes, all tuned during warm-up."""
    return 1 << (n - 1).bit_length()


def bucket_sizes(max_batch_size: int) -> tuple[int, ...]:
    return tuple(1 << i for i in range(bucket_size(max_batch_size).bit_length()))


@dataclass(frozen=True)
class _Graph:
    """One captured forward: replaying it reads ``inputs`` and rewrites ``logits`` in place."""

    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor
    logits: torch.Tensor


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded, for ``/v1/models``, logs and benchmark reports."""

    name: str
    architecture: str
    parameters: int
    sha256: str
    path: str
    device: str
    engine: str
    config: ModelConfig
    cuda_graphs: bool
    score_offset: float  # the verdict rule's default offset for this model (LoadedCheckpoint)
    score_scale: float  # and its default scale
    local_margin: float | None = None  # and its file rule's margin for one window's evidence, if any
    note: str | None = None  # what a reader of /v1/models must know (a simulated model says so)


@dataclass(frozen=True)
class LoadOptions:
    """How a model is found and built: :meth:`Detector.load`'s knobs but the model's name and file,
    grouped so that the settings build them in one place (``Settings.loading``) for the engine and the
    CLI alike."""

    checkpoint_dir: str | Path | None = None
    engine: str = "fast"
    device: str = "auto"
    compile_model: bool = False
    allocator_tuning: bool = True
    cuda_graphs: bool = True

    def load(self, name: str, checkpoint: str | Path | None = None) -> Detector:
        """The model ``name`` (from ``checkpoint`` when given), loaded so."""
        return Detector.load(name, checkpoint=checkpoint, **vars(self))


class Detector:
    """Scores ``(B, 64600)`` float32 windows; the score is ``logit[bona fide] - logit[spoof]``."""

    def __init__(
        self,
        loaded: LoadedCheckpoint,
        *,
        engine: str = "fast",
        device: str = "auto",
        compile_model: bool = False,
        allocator_tuning: bool = True,
        cuda_graphs: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        if self.device.type == "cpu" and allocator_tuning:
            tune_allocator()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            # fp32 engines stay fp32 (golden parity); bf16 is the opt-in reduced-precision path.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.engine = engine
        parameters = sum(p.numel() for p in loaded.model.parameters())  # frozen ones run too
        self.info = ModelInfo(
            name=loaded.name,
            architecture=loaded.config.architecture,
            parameters=parameters,
            sha256=loaded.sha256,
            path=str(loaded.path),
            device=str(self.device),
            engine=engine,
            config=loaded.config,
            cuda_graphs=cuda_graphs and self.device.type == "cuda" and not compile_model,
            score_offset=loaded.score_offset,
            score_scale=loaded.score_scale,
            local_margin=loaded.local_margin,
        )
        self._module = build_engine(loaded.model, engine, self.device, compile_model)
        self._pinned: torch.Tensor | None = None
        self._graphs: dict[int, _Graph] = {}
        self._graph_pool = torch.cuda.graph_pool_handle() if self.info.cuda_graphs else None

    @classmethod
    def load(
        cls,
        name: str = "aasist",
        *,
        checkpoint: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        engine: str = "fast",
        device: str = "auto",
        compile_model: bool = False,
        allocator_tuning: bool = True,
        cuda_graphs: bool = True,
    ) -> Detector:
        resolve_device(device)  # a device that cannot be used is reported before any weights are read
        loaded = load_checkpoint(name, checkpoint, checkpoint_dir)
        return cls(
            loaded,
            engine=engine,
            device=device,
            compile_model=compile_model,
            allocator_tuning=allocator_tuning,
            cuda_graphs=cuda_graphs,
        )

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def window(self) -> int:
        return self.info.config.nb_samp

    def _stage(self, windows: np.ndarray) -> torch.Tensor:
        """The batch as a host tensor; on CUDA in a pinned buffer (grown on demand) so that the copy to
        the GPU is asynchronous. Each forward ends by copying its logits back, which synchronises, so
        the buffer is free again when the next call refills it."""
        host = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        if self.device.type != "cuda":
            return host
        if self._pinned is None or self._pinned.shape[0] < host.shape[0]:
            self._pinned = torch.empty(host.shape, dtype=torch.float32).pin_memory()
        staged = self._pinned[: host.shape[0]]
        staged.copy_(host)
        return staged

    def _captured(self, size: int) -> _Graph:
        """The forward for batch ``size`` captured as a CUDA graph, on first use.

        An eager forward launches several hundred small kernels from Python, holding the GIL between
        them, so in the server the event loop and the decoding threads stall while the GPU idles. A
        replay is one call that releases the GIL. Warm-up runs on a side stream first (cuDNN picks its
        algorithms, the allocator settles); all sizes share one memory pool, which is safe because
        replays never overlap (one thread, one stream).
        """
        graph = self._graphs.get(size)
        if graph is not None:
            return graph
        inputs = torch.zeros((size, self.window), dtype=torch.float32, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):
                self._module(inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(cuda_graph, pool=self._graph_pool):
            _, logits = self._module(inputs)
        graph = self._graphs[size] = _Graph(cuda_graph, inputs, logits)
        logger.info("captured %s (%s) forward for batch %d as a CUDA graph", self.name, self.engine, size)
        return graph

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """``(B, 64600)`` -> ``(B, 2)`` float32 logits (index 1 = bona fide)."""
        if windows.ndim != 2 or windows.shape[1] != self.window:
            raise ValueError(f"expected windows of shape (B, {self.window}), got {windows.shape}")
        n = windows.shape[0]
        padded = bucket_size(n) if self.pads_to_buckets else n
        if padded != n:
            windows = np.concatenate([windows, np.zeros((padded - n, self.window), dtype=np.float32)])
        staged = self._stage(windows)
        if self.info.cuda_graphs:
            graph = self._captured(padded)
            graph.inputs.copy_(staged, non_blocking=True)
            graph.graph.replay()
            return graph.logits[:n].float().cpu().numpy()
        if self.device.type == "cpu":
            return self._cpu_logits(staged)
        with torch.inference_mode():
            _, logits = self._module(staged.to(self.device, non_blocking=True))
            return logits[:n].float().cpu().numpy()

    def _cpu_logits(self, windows: torch.Tensor) -> np.ndarray:
        """The forward in slices of ``CPU_FORWARD_WINDOWS``: bounded memory at no cost in speed."""
        with torch.inference_mode():
            parts = [
                self._module(windows[i : i + CPU_FORWARD_WINDOWS])[1].float()
                for i in range(0, windows.shape[0], CPU_FORWARD_WINDOWS)
            ]
        return torch.cat(parts).numpy()

    @property
    def pads_to_buckets(self) -> bool:
        """Forwards on CUDA compute ``bucket_size(n)`` windows for a batch of ``n``."""
        return self.device.type == "cuda"

    def scores(self, windows: np.ndarray) -> np.ndarray:
        """Per-window score ``logit[1] - logit[0]``: positive means bona fide."""
        logits = self.logits(windows)
        return logits[:, 1] - logits[:, 0]

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Run each batch size once (allocations, cuDNN algorithm choice, compilation); returns seconds."""
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        for size in batch_sizes:
            self.scores((rng.standard_normal((size, self.window)) * 0.05).astype(np.float32))
        elapsed = time.perf_counter() - start
        logger.info("warmed up %s (%s, %s) in %.2f s", self.name, self.engine, self.device, elapsed)
        return elapsed
