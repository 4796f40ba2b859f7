"""Scoring a labelled data set with the service's Detector: parallel decoding, batches across files, resume.

Decoding runs in a thread pool (libsndfile, FFmpeg and the resampler release the GIL) at most
``prefetch`` files ahead of the model, so memory stays flat however long the list is. The model runs on
the calling thread and fills each batch with windows of consecutive files; a file's score is appended to
the score file as soon as its last window is scored, and the file is flushed after every batch.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..audio.decoding import decode
from ..audio.errors import AudioError
from ..audio.options import WINDOW, AudioOptions
from ..audio.windows import WindowSet, make_windows
from ..datasets import Dataset, Item
from ..pipeline import Pipeline
from ..progress import Progress, progress_bar
from ..scorer import Scorer
from ..scoring import INCONCLUSIVE, Rule
from .scorefile import InconclusiveWriter, ScoreWriter, inconclusive_path, resume_inconclusive, resume_scores

logger = logging.getLogger(__name__)


PROTOCOLS = ("service", "reference")


@dataclass(frozen=True)
class ScoringProtocol:
    """How a file becomes one score: ``service`` (the service's verdict) or ``reference`` (first window)."""

    name: str
    options: AudioOptions
    rule: Rule

    @property
    def whole_file(self) -> bool:
        return self.name == "service"

    @property
    def pipeline(self) -> Pipeline:
        return Pipeline(self.options, self.rule)


def scoring_protocol(base: AudioOptions, rule: Rule, *, name: str, preprocess: str | None) -> ScoringProtocol:
    """The protocol, its audio options and its verdict rule.

    ``service`` (default) is what the service answers: every window, its preprocessing
    (``base.preprocess``), length limits and verdict rule (``rule``): a file's score is the rule's, and
    a file with too little speech to judge is reported, not scored. ``reference`` is the official AASIST
    evaluation input and output: the first 64,600 samples, shorter audio tiled, raw samples
    (``preprocess="reference"``), the network's own margin as the score (no offset), any non-empty
    length and no speech floor (the official code has neither). ``preprocess`` overrides the
    preprocessing of either.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    if name == "service":
        return ScoringProtocol(name, replace(base, preprocess=preprocess or base.preprocess), rule)
    options = replace(base, preprocess=preprocess or "reference", min_duration_s=0.0)
    return ScoringProtocol(name, options, Rule(threshold=rule.threshold))


@dataclass(frozen=True)
class Failure:
    """A file that could not be scored (the audio module's error code); such files are left out of every
    figure and retried by a rerun."""

    key: str
    path: str
    code: str
    detail: str


@dataclass(frozen=True)
class Inconclusive:
    """A file the service protocol would answer INCONCLUSIVE (too little speech): a verdict, not a
    failure, so it is recorded and not judged again by a rerun."""

    key: str
    path: str
    reason: str


@dataclass(frozen=True)
class RunResult:
    """What a run leaves behind besides the score file, for the summary and the report."""

    scores: dict[str, float]  # every key of the data set with a score, resumed ones included
    failures: list[Failure]
    inconclusive: list[Inconclusive]  # resumed ones included, in the data set's order
    resumed: int  # scores taken from an earlier run's score file
    scored: int  # files scored by this run
    windows: int  # windows this run put through the model
    seconds: float


def _windows(item: Item, protocol: ScoringProtocol) -> WindowSet:
    """The file's model inputs, with their spans, silence flags and speech length."""
    options = protocol.options
    data = item.path.read_bytes()
    if protocol.whole_file:
        return protocol.pipeline.windows(data)[1]
    audio = decode(data, min_duration_s=options.min_duration_s, max_duration_s=options.max_duration_s)
    return make_windows(
        audio.waveform[:WINDOW],  # one window: the first WINDOW samples, or the tiled short file
        preprocess=options.preprocess,
        target_rms_dbfs=options.target_rms_dbfs,
        max_gain_db=options.max_gain_db,
        silence_floor_dbfs=options.silence_floor_dbfs,
    )


def _load(item: Item, protocol: ScoringProtocol) -> WindowSet | Failure:
    try:
        return _windows(item, protocol)
    except AudioError as exc:
        return Failure(item.key, str(item.path), exc.code, exc.detail)
    except OSError as exc:
        return Failure(item.key, str(item.path), "unreadable_file", str(exc))


@dataclass
class _File:
    item: Item
    windows: WindowSet
    scores: list[float] = field(default_factory=list)


class _Batches:
    """Windows of consecutive files waiting for the model; completed files go to the score file."""

    def __init__(
        self,
        scorer: Scorer,
        protocol: ScoringProtocol,
        writer: ScoreWriter,
        undecided: InconclusiveWriter,
        scores: dict[str, float],
        inconclusive: dict[str, str],
        bar: Progress,
    ) -> None:
        self.scorer, self.protocol, self.bar = scorer, protocol, bar
        self.writer, self.undecided = writer, undecided
        self.scores, self.inconclusive = scores, inconclusive
        self.rows: list[np.ndarray] = []
        self.owners: list[_File] = []
        self.windows = 0

    def add(self, item: Item, windows: WindowSet, batch_size: int) -> None:
        owner = _File(item, windows)
        self.rows.extend(windows.batch)
        self.owners.extend([owner] * len(windows.batch))
        while len(self.rows) >= batch_size:
            self.run(batch_size)

    def run(self, n: int) -> None:
        rows, self.rows = self.rows[:n], self.rows[n:]
        owners, self.owners = self.owners[:n], self.owners[n:]
        scores = self.scorer.scores(np.stack(rows))
        self.windows += len(rows)
        for owner, score in zip(owners, scores, strict=True):
            owner.scores.append(float(score))
            if len(owner.scores) == len(owner.windows.batch):
                self._done(owner)
        self.writer.flush()
        self.undecided.flush()

    def _done(self, f: _File) -> None:
        """The protocol's verdict on a completed file: its score, or why it cannot be judged."""
        w = f.windows
        decision = self.protocol.pipeline.decision(w, np.asarray(f.scores))
        if decision.prediction == INCONCLUSIVE:
            self.undecided.write(f.item.key, decision.reason or "")
            self.inconclusive[f.item.key] = decision.reason or ""
        else:
            self.writer.write(f.item.key, decision.score)
            self.scores[f.item.key] = decision.score
        self.bar.update(1)


def score_dataset(
    dataset: Dataset,
    scorer: Scorer,
    protocol: ScoringProtocol,
    *,
    scores_path: Path,
    batch_size: int,
    workers: int,
    prefetch: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Score every file of ``dataset`` not already in ``scores_path`` (or judged inconclusive beside it),
    appending to it.

    ``prefetch`` bounds the files decoded (or decoding) ahead of the model; by default two batches'
    worth or two per worker, whichever is more. Files that cannot be decoded become :class:`Failure`
    entries and are retried by the next run; files with too little speech are recorded in
    ``inconclusive.jsonl`` beside the scores and, like scored files, not judged again.
    """
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be positive, got {batch_size}, {workers}")
    ahead = prefetch or max(2 * batch_size, 2 * workers)
    keys = {item.key for item in dataset.items}
    undecided_path = inconclusive_path(scores_path)
    earlier = resume_scores(scores_path)
    # Without the score file the run starts over, so an inconclusive list left beside it is stale too.
    judged = resume_inconclusive(undecided_path) if scores_path.exists() else {}
    stale = len((earlier.keys() | judged.keys()) - keys)
    if stale:
        logger.warning(
            "%s: ignoring %d scores of keys that %s does not list", scores_path, stale, dataset.name
        )
    scores = {key: value for key, value in earlier.items() if key in keys}
    inconclusive = {key: reason for key, reason in judged.items() if key in keys and key not in scores}
    todo = [item for item in dataset.items if item.key not in scores and item.key not in inconclusive]
    logger.info(
        "%s: %d files, %d already scored and %d inconclusive in %s, %d to score "
        "(%s protocol, preprocess %s, batch %d)",
        dataset.name,
        len(dataset.items),
        len(scores),
        len(inconclusive),
        scores_path.parent,
        len(todo),
        protocol.name,
        protocol.options.preprocess,
        batch_size,
    )
    resumed = len(scores) + len(inconclusive)
    failures: list[Failure] = []
    start = time.perf_counter()
    bar = progress_bar(
        len(dataset.items), f"scoring {dataset.name}", "file", initial=resumed, disable=not progress
    )
    writer = ScoreWriter(scores_path)
    undecided = InconclusiveWriter(undecided_path, append=bool(judged))
    batches = _Batches(scorer, protocol, writer, undecided, scores, inconclusive, bar)
    queue: deque[tuple[Item, Future]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="eval-decode") as pool:
        try:
            pending = iter(todo)
            for item in pending:
                queue.append((item, pool.submit(_load, item, protocol)))
                if len(queue) >= ahead:
                    break
            while queue:
                item, future = queue.popleft()
                loaded = future.result()
                following = next(pending, None)
                if following is not None:
                    queue.append((following, pool.submit(_load, following, protocol)))
                if isinstance(loaded, Failure):
                    logger.warning("cannot score %s (%s): %s", loaded.path, loaded.code, loaded.detail)
                    failures.append(loaded)
                    bar.update(1)
                    continue
                batches.add(item, loaded, batch_size)
            if batches.rows:
                batches.run(len(batches.rows))
        finally:
            for _, future in queue:  # interrupted: do not decode what will not be scored
                future.cancel()
            writer.close()
            undecided.close()
            bar.close()
    seconds = time.perf_counter() - start
    scored = len(scores) + len(inconclusive) - resumed
    logger.info(
        "scored %d files (%d windows) in %.1f s; %d inconclusive, %d failed",
        scored,
        batches.windows,
        seconds,
        len(inconclusive),
        len(failures),
    )
    undecided_files = [
        Inconclusive(item.key, str(item.path), inconclusive[item.key])
        for item in dataset.items
        if item.key in inconclusive
    ]
    return RunResult(scores, failures, undecided_files, resumed, scored, batches.windows, seconds)
