"""Labelled files -> the 64,600-sample windows AASIST trains and is scored on, the official way.

Training windows are random crops (:func:`pad_random`); dev windows are the first 64,600 samples
(:func:`pad_head`), the input the reference evaluation and ``voxguard serve``'s first window use. Clips
shorter than a window are repeated end to end, never zero-padded: zero padding changes the scores.

Decoding (any format :func:`voxguard.audio.decoding.decode` reads, resampled to 16 kHz mono) happens
either once up front into memory (``cache="memory"``, the default: about 230 MB per hour of audio) or in the
DataLoader workers every epoch (``cache="none"``, for sets larger than memory, as the official code
does). Every random choice for an item (crop position, augmentations) is drawn from a generator keyed
by ``(seed, epoch, index)``, so a run is the same whatever the worker count or order, and a resumed run
needs no data-loader state.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from ..audio.decoding import decode
from ..audio.errors import AudioError
from ..audio.options import SAMPLE_RATE, WINDOW
from ..datasets import BONAFIDE, Dataset, DatasetError, Item

logger = logging.getLogger(__name__)

CACHE_MODES: tuple[str, ...] = ("memory", "none")
# Logit index of each label, as in the official model: 0 = spoof, 1 = bona fide.
LABEL_INDEX = {"spoof": 0, BONAFIDE: 1}
# Training clips may be far longer than an upload; an hour is 230 MB decoded.
MAX_CLIP_S = 3600.0

# Distinct first words keep the shuffle and per-item generators independent of each other.
_ORDER_STREAM, _ITEM_STREAM = 0, 1

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def tile_to(x: np.ndarray, length: int) -> np.ndarray:
    """Repeat ``x`` end to end and cut it to ``length`` samples (the official short-clip padding)."""
    if x.shape[0] == 0:
        raise ValueError("cannot pad an empty waveform")
    return np.tile(x, length // x.shape[0] + 1)[:length]


def pad_random(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample crop; a shorter clip is tiled from its start (official ``pad_random``).

    Every start position ``0 .. len(x) - length`` is possible (the official code never picks the last
    one and fails on a clip of exactly ``length`` samples; neither matters for the recipe).
    """
    if x.shape[0] < length:
        return tile_to(x, length)
    start = int(rng.integers(0, x.shape[0] - length + 1))
    return x[start : start + length]


def pad_head(x: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` samples, tiled if shorter: the reference evaluation input."""
    return x[:length] if x.shape[0] >= length else tile_to(x, length)


def load_waveform(item: Item) -> np.ndarray:
    """Decode one listed file to 16 kHz mono float32; an unreadable file stops the run with its path."""
    try:
        return decode(item.path.read_bytes(), min_duration_s=0.0, max_duration_s=MAX_CLIP_S).waveform
    except (AudioError, OSError) as exc:
        detail = exc.detail if isinstance(exc, AudioError) else str(exc)
        raise DatasetError(f"{item.path}: {detail}") from exc


def decode_all(
    items: Sequence[Item], *, keep: int | None, threads: int, progress: bool, what: str
) -> list[np.ndarray]:
    """Decode every item once (libsndfile, FFmpeg and the resampler release the GIL, so threads help).

    ``keep`` cuts each waveform to its first ``keep`` samples: the dev set only ever reads its head.
    """

    def one(item: Item) -> np.ndarray:
        x = load_waveform(item)
        return x[:keep].copy() if keep is not None and x.shape[0] > keep else x

    with (
        ThreadPoolExecutor(max_workers=max(1, threads)) as pool,
        tqdm(
            total=len(items), desc=f"decoding {what}", unit="file", file=sys.stderr, disable=not progress
        ) as bar,
    ):
        waveforms = []
        for x in pool.map(one, items):
            waveforms.append(x)
            bar.update(1)
    megabytes = sum(x.nbytes for x in waveforms) / 1e6
    seconds = sum(x.shape[0] for x in waveforms) / SAMPLE_RATE
    logger.info(
        "decoded %d %s files (%.1f h of audio, %.0f MB in memory)",
        len(items),
        what,
        seconds / 3600,
        megabytes,
    )
    return waveforms


def check_labels(dataset: Dataset, role: str) -> None:
    """Training needs both classes in both sets: the loss and the EER are meaningless otherwise."""
    counts = dataset.counts()
    empty = [label for label, n in counts.items() if n == 0]
    if empty:
        raise DatasetError(
            f"the {role} set {dataset.name!r} has no {' or '.join(empty)} items ({counts}); "
            "training needs both bona fide and spoof examples"
        )


class TrainWindows(TorchDataset):
    """Random training crops, optionally augmented; indexed by ``(epoch, index)`` pairs."""

    def __init__(
        self,
        items: Sequence[Item],
        *,
        seed: int,
        augment: Augment | None = None,
        waveforms: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.items = list(items)
        self.labels = [LABEL_INDEX[item.label] for item in self.items]
        self.seed = seed
        self.augment = augment
        self.waveforms = waveforms

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        rng = np.random.default_rng((self.seed, _ITEM_STREAM, epoch, index))
        x = self.waveforms[index] if self.waveforms is not None else load_waveform(self.items[index])
        window = pad_random(x, WINDOW, rng)
        if self.augment is not None:
            window = self.augment(window, rng)
        return torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32)), self.labels[index]


class DevWindows(TorchDataset):
    """The first window of every dev file, the input :func:`pad_head` gives."""

    def __init__(self, items: Sequence[Item], waveforms: Sequence[np.ndarray] | None = None) -> None:
        self.items = list(items)
        self.labels = [LABEL_INDEX[item.label] for item in self.items]
        self.waveforms = waveforms

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.waveforms[index] if self.waveforms is not None else load_waveform(self.items[index])
        return torch.from_numpy(np.ascontiguousarray(pad_head(x, WINDOW))), self.labels[index]


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """One epoch of shuffled full batches, a pure function of ``(seed, epoch)``.

    The last partial batch is dropped, as in the official loader: a training BatchNorm on a batch of
    one is undefined, and equal batches keep the per-step schedule exact.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = np.random.default_rng((self.seed, _ORDER_STREAM, self.epoch)).permutation(self.n)
        for b in range(len(self)):
            yield [(self.epoch, int(i)) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]


def make_loader(
    dataset: TorchDataset, *, workers: int, seed: int, pin_memory: bool, **batching: object
) -> DataLoader:
    """A DataLoader (``batching``: ``batch_sampler=`` or ``batch_size=``) with its own generator, so
    creating one never draws from the global RNG (dropout's). On Linux its workers fork: the in-memory
    cache is then shared copy-on-write instead of pickled to every worker every epoch, as Python 3.14's
    default ``forkserver`` would. Forking after CUDA start-up is safe here because workers never use CUDA.
    """
    fork = workers > 0 and sys.platform == "linux"
    return DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        multiprocessing_context="fork" if fork else None,
        **batching,
    )
