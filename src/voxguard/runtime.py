"""Process-level tuning for CPU inference: allocator behaviour and thread count."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import torch

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_allocator_tuned = False


def tune_allocator() -> bool:
    """Keep freed activation buffers mapped so the next forward does not page-fault them in again.

    AASIST's early activations are ~60 MB per clip. glibc serves blocks that large with a fresh
    ``mmap`` and unmaps them on free, so every forward pays a page fault per 4 KiB of every
    buffer: on a 2-core machine that was half of the eager model's time. Disabling ``mmap`` for
    allocations and raising the trim threshold makes glibc reuse the heap, as jemalloc/tcmalloc
    would. Peak memory stays what one batch needs. Returns whether the setting took effect.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        ok = False
    _allocator_tuned = ok
    logger.info("heap allocator tuning %s", "enabled" if ok else "unavailable on this libc")
    return ok


def set_threads(threads: int | None) -> int:
    """Apply a thread count for intra-op parallelism; ``None`` or ``0`` keeps all cores."""
    if threads and threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
