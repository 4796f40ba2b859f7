"""Score files: the CM scores ``voxguard eval`` writes (resumable) and the organisers' ASV scores it reads.

The CM file has the ASVspoof 2021 submission format, one ``utt_id score`` line per file (higher = bona
fide). It is appended to while files are scored and flushed after every batch, so an interrupted run
loses one batch at most and a rerun skips every key already there. A ``.meta.json`` beside it records
what produced the scores, so a rerun with another model or protocol cannot mix its scores in. Files with
too little speech to judge have no score; ``inconclusive.jsonl`` beside it lists them with the reason,
so a rerun does not judge them again either.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

logger = logging.getLogger(__name__)

ASV_KEYS = ("target", "nontarget", "spoof")


class ScoreFileError(ValueError):
    """A score file that cannot be used as given; the message names the file and the line."""


INCONCLUSIVE_FILE = "inconclusive.jsonl"


def _complete_lines(path: Path) -> str:
    """The complete lines of ``path``. A last line without its newline is a write cut short by an
    interruption: it is dropped and the file truncated to the last complete line, so the next append
    starts on a line of its own."""
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if len(complete) != len(raw):
        partial = raw[len(complete) :]
        logger.warning("%s: dropping an incomplete last line %r (interrupted write)", path, partial)
        with path.open("r+b") as fh:
            fh.truncate(len(complete))
    return complete.decode("utf-8")


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-empty complete lines of ``path`` with their line numbers (none if it does not exist)."""
    if not path.exists():
        return
    for number, line in enumerate(_complete_lines(path).splitlines(), start=1):
        if line.strip():
            yield number, line


def resume_scores(path: Path) -> dict[str, float]:
    """The scores already in ``path`` (empty if it does not exist); see :func:`_complete_lines`."""
    scores: dict[str, float] = {}
    for number, line in _numbered_lines(path):
        parts = line.rsplit(maxsplit=1)
        try:
            score = float(parts[1]) if len(parts) == 2 else math.nan
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise ScoreFileError(f"{path}:{number}: expected 'key score' with a finite score, got {line!r}")
        scores[parts[0]] = score
    return scores


def inconclusive_path(scores_path: Path) -> Path:
    return scores_path.with_name(INCONCLUSIVE_FILE)


def resume_inconclusive(path: Path) -> dict[str, str]:
    """The files already judged inconclusive, key to reason (empty if ``path`` does not exist)."""
    found: dict[str, str] = {}
    for number, line in _numbered_lines(path):
        try:
            record = json.loads(line)
            found[str(record["key"])] = str(record["reason"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ScoreFileError(
                f'{path}:{number}: expected {{"key": ..., "reason": ...}}, got {line!r}'
            ) from exc
    return found


class InconclusiveWriter:
    """Appends ``{"key", "reason"}`` lines to ``inconclusive.jsonl``, created on the first one.

    ``append=False`` starts the list over (a run without earlier scores), so no stale entry survives.
    """

    def __init__(self, path: Path, *, append: bool) -> None:
        self.path = path
        if not append:
            path.unlink(missing_ok=True)
        self._fh: TextIO | None = None

    def write(self, key: str, reason: str) -> None:
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(json.dumps({"key": key, "reason": reason}) + "\n")

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


class ScoreWriter:
    """Appends ``key score`` lines to a CM score file; :meth:`flush` after each batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO = path.open("a", encoding="utf-8")

    def write(self, key: str, score: float) -> None:
        if "\n" in key or "\r" in key:
            raise ScoreFileError(f"key {key!r} contains a line break and cannot go into {self.path}")
        self._fh.write(f"{key} {float(score)!r}\n")  # repr: the exact float, read back bit for bit

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def check_provenance(scores_path: Path, provenance: dict[str, object]) -> None:
    """Refuse to extend scores that another model, engine or protocol produced; record ours otherwise.

    The record is ``<scores>.meta.json``. Scores without one (written by hand or another tool) are
    trusted with a warning.
    """
    meta_path = scores_path.with_suffix(".meta.json")
    if scores_path.exists() and meta_path.exists():
        recorded = json.loads(meta_path.read_text(encoding="utf-8"))
        differing = {k: (recorded.get(k), v) for k, v in provenance.items() if recorded.get(k) != v}
        if differing:
            what = ", ".join(f"{k} {old!r} (now {new!r})" for k, (old, new) in differing.items())
            raise ScoreFileError(
                f"{scores_path} holds scores made with {what}. "
                f"Hint: give another --out, or delete {scores_path} to start again"
            )
        return
    if scores_path.exists():
        logger.warning("%s has no %s: assuming it was made as this run is", scores_path, meta_path.name)
    meta_path.write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class AsvScores:
    """The organisers' ASV scores by trial kind, for the t-DCF's fixed ASV operating point."""

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray


def read_asv_scores(path: Path) -> AsvScores:
    """ASVspoof 2019 ASV score file: ``source key score`` lines such as ``bonafide target 2.31`` or
    ``A07 spoof -1.2``. The score is the last field and the key the last ``target``/``nontarget``/
    ``spoof`` field before it, so files with an extra leading column read the same."""
    if not path.is_file():
        raise ScoreFileError(f"ASV score file {path} does not exist")
    found: dict[str, list[float]] = {key: [] for key in ASV_KEYS}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        keys = [f for f in fields[:-1] if f in found]
        try:
            score = float(fields[-1])
        except ValueError:
            score = math.nan
        if not keys or not math.isfinite(score):
            raise ScoreFileError(
                f"{path}:{number}: expected an ASV score line such as 'bonafide target 2.31', got {line!r}"
            )
        found[keys[-1]].append(score)
    missing = [key for key in ASV_KEYS if not found[key]]
    if missing:
        raise ScoreFileError(f"{path} has no {'/'.join(missing)} trials; the t-DCF needs all of {ASV_KEYS}")
    return AsvScores(*(np.asarray(found[key], dtype=np.float64) for key in ASV_KEYS))
