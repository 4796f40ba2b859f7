"""Progress on stderr: a tqdm bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns, which a log file or CI output keeps as one long line of
``\\r`` noise. Off a terminal the same calls therefore print a whole line now and then instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Protocol, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LINE_INTERVAL_S = 10.0


class Progress(Protocol):
    """What callers use of a tqdm bar."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc: object) -> None: ...


class LineProgress:
    """tqdm's ``update``/``close`` as plain lines: at most one every ``interval_s``, and one at the end."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        *,
        initial: int = 0,
        interval_s: float = LINE_INTERVAL_S,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self._started = self._printed = time.monotonic()
        self._closed = False

    def _line(self, suffix: str = "") -> None:
        unit = self.unit + "s" if len(self.unit) > 1 else self.unit  # "files", but "B"
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        print(f"{self.desc}: {self.n}/{self.total} {unit}{share}{suffix}", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._printed >= self.interval_s and self.n < self.total:
            self._printed = now
            self._line()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line(f" in {time.monotonic() - self._started:.1f} s")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int, desc: str, unit: str, *, initial: int = 0, unit_scale: bool = False, disable: bool = False
) -> Progress:
    """A bar on a terminal, plain lines elsewhere, nothing when ``disable``."""
    if disable or sys.stderr.isatty():
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            file=sys.stderr,
            disable=disable,
        )
    return LineProgress(total, desc, unit, initial=initial)


def track(items: Iterable[T], total: int, desc: str, unit: str, *, disable: bool = False) -> Iterator[T]:
    """Iterate over ``items`` while reporting progress as :func:`progress_bar` does."""
    bar = progress_bar(total, desc, unit, disable=disable)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
