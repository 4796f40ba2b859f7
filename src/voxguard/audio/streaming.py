"""A live stream cut into the same windows a whole recording would give, and resampled on the way."""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio.functional as taf

from .decoding import resamplable
from .options import SAMPLE_RATE, WINDOW, AudioOptions
from .speech import SPEECH_FRAME, frame_levels, speech_seconds
from .windows import WindowSet, level_windows, windows_of


class StreamWindower:
    """Cuts a live 16 kHz stream into the same windows :func:`make_windows` would cut from the whole.

    Windows start every ``hop`` samples from 0; :meth:`finish` adds the tail window that ends at the
    last sample (or, for a stream shorter than one window, the tiled window), so a finished stream
    yields exactly the windows of the complete recording. Only ``WINDOW`` samples plus one chunk are
    kept in memory, whatever the stream's length.
    """

    def __init__(self, options: AudioOptions, hop: int) -> None:
        if hop < 1:
            raise ValueError(f"hop must be positive, got {hop}")
        self.options = options
        self.hop = hop
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # absolute index of _buffer[0]
        self._next = 0  # absolute start of the next window
        self._emitted_end = 0
        self.total = 0
        self._levels: list[np.ndarray] = []  # per 20 ms frame, for speech_s
        self._unframed = np.zeros(0, dtype=np.float32)

    @property
    def speech_s(self) -> float:
        """Seconds of speech so far, measured as :func:`make_windows` measures a whole recording."""
        levels = [*self._levels, frame_levels(self._unframed)] if len(self._unframed) else self._levels
        return speech_seconds(np.concatenate(levels) if levels else np.zeros(0))

    def feed(self, samples: np.ndarray) -> WindowSet | None:
        """Add samples; returns the windows they completed (``None`` when none did)."""
        samples = np.asarray(samples, dtype=np.float32).ravel()
        self._buffer = np.concatenate([self._buffer, samples])
        self.total += len(samples)
        unframed = np.concatenate([self._unframed, samples])
        whole = len(unframed) // SPEECH_FRAME * SPEECH_FRAME
        if whole:
            self._levels.append(frame_levels(unframed[:whole]))
        self._unframed = unframed[whole:]
        starts = []
        while self._next + WINDOW <= self.total:
            starts.append(self._next)
            self._next += self.hop
        windows = self._cut(starts) if starts else None
        # Keep what the next window and a possible tail window (ending at the last sample) need.
        drop = min(self._next, self.total - WINDOW) - self._offset
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._offset += drop
        return windows

    def finish(self) -> WindowSet | None:
        """The last window: ending at the last sample, or the tiled short stream; ``None`` if covered."""
        if self.total == 0:
            return None
        if self.total < WINDOW:
            return windows_of(self._buffer, self.options)
        if self._emitted_end == self.total:
            return None
        return self._cut([self.total - WINDOW])

    def _cut(self, starts: list[int]) -> WindowSet:
        raw = np.stack([self._buffer[s - self._offset : s - self._offset + WINDOW] for s in starts])
        batch, silent, level = level_windows(raw, self.options)
        self._emitted_end = starts[-1] + WINDOW
        spans = [(s / SAMPLE_RATE, (s + WINDOW) / SAMPLE_RATE) for s in starts]
        return WindowSet(batch, spans, silent, level, self.speech_s)


class StreamResampler:
    """Resamples a live stream to 16 kHz in chunks, matching a whole-signal resample to float precision.

    Each step resamples only the new input plus a margin wider than the sinc kernel, starting on an
    input index where the input and output sample grids meet, and emits only outputs whose kernel
    lies entirely inside what has arrived; :meth:`flush` emits the rest.
    """

    def __init__(self, rate: int) -> None:
        if not resamplable(rate):
            raise ValueError(f"cannot resample a stream from {rate} Hz")
        self.rate = rate
        self._step_in = rate // math.gcd(rate, SAMPLE_RATE)  # input samples between aligned grid points
        self._margin = self._step_in * math.ceil(256 / self._step_in)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0
        self._total_in = 0
        self._done_out = 0

    def feed(self, samples: np.ndarray) -> np.ndarray:
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float32).ravel()])
        self._total_in += len(samples)
        ready = max(0, (self._total_in - self._margin) * SAMPLE_RATE // self.rate)
        return self._emit(ready)

    def flush(self) -> np.ndarray:
        return self._emit(math.ceil(self._total_in * SAMPLE_RATE / self.rate))

    def _emit(self, until: int) -> np.ndarray:
        if until <= self._done_out:
            return np.zeros(0, dtype=np.float32)
        start = self._aligned_start(self._done_out)
        segment = torch.from_numpy(self._buffer[start - self._buffer_start :].copy())
        out = taf.resample(segment, self.rate, SAMPLE_RATE).numpy()
        base = start * SAMPLE_RATE // self.rate
        result = out[self._done_out - base : until - base]
        self._done_out = until
        keep = self._aligned_start(until)
        self._buffer = self._buffer[keep - self._buffer_start :]
        self._buffer_start = keep
        return result

    def _aligned_start(self, output_index: int) -> int:
        """An input index on the shared grid, a margin before the input that ``output_index`` needs."""
        needed = output_index * self.rate // SAMPLE_RATE - self._margin
        return max(0, needed // self._step_in * self._step_in)
