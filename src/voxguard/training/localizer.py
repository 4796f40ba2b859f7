"""Training data and training loop for the segment localizer (:mod:`voxguard.model.localizer`).

Every example is a recording whose synthetic samples are known exactly: real speech (6-16 s) with one
or two synthetic stretches (1-7 s, one voice, at the real speech's level within +-4 dB) spliced in at
any sample, or real speech alone, or synthetic speech alone; then one channel over the whole file
(clean, telephone, noise, a codec, or the corpus's random training chain). The frame labels are the
share of each 20 ms frame that is synthetic.

The real speech is one LibriSpeech speaker or Asterisk prompt voice, or (a share of the examples that
each ensemble member sets, :data:`MEMBERS`) pieces of several recordings end to end, each through its
own source channel (a room, a microphone, a codec, a level); a synthetic stretch spliced into those gets
one of its own half the time. Real recordings that people edit together change speaker, room and device
mid-file, and where every such change in training was a synthetic stretch the net learnt to flag any
change: a phone memo between studio takes was called synthetic (docs/evaluation.md, "Segment edges").

Only the corpus's *train* LibriSpeech speakers and *train* sentences are used, and never the speakers or
the sentences ``scripts/edge_study.py`` measures with, so the edge figures in docs/evaluation.md are on
speakers, sentences and recordings the localizer never heard.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from .. import edges
from ..audio.options import SAMPLE_RATE as SR
from ..audio.speech import speech_span
from ..corpus import channels, copysynth, texts, tts
from ..corpus.build import ASTERISK_DIR, ASTERISK_SPLITS, read16k, split_of_speaker, to16k
from ..model.localizer import FRAME_S, LocEnsemble, LocNet, features, frame_labels
from . import augment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSizes:
    """Clips per voice of each engine family (``other``: every engine not named), copies per vocoder."""

    per_voice: dict[str, int] = field(default_factory=lambda: {"piper": 24, "kokoro": 5, "other": 10})
    copies_per_vocoder: int = 20
    families: tuple[str, ...] = ("piper", "kokoro", "espeak", "flite", "festival", "freetts")
    vocoders: tuple[str, ...] = ("world", "griffinlim", "lpc")


TINY = PoolSizes(per_voice={"other": 2}, copies_per_vocoder=2, families=("espeak",), vocoders=("lpc",))


@dataclass
class Pools:
    """Real recordings (one per LibriSpeech train speaker; the recipe adds Asterisk ones to the training
    pools) and synthetic clips by voice."""

    real: list[np.ndarray]
    synthetic: dict[str, list[np.ndarray]]


def _synthesize(job: tuple[tts.Voice, str, int]) -> tuple[str, np.ndarray]:
    voice, text, seed = job
    audio, rate = tts.synthesize(text, voice, np.random.default_rng(seed))
    x = to16k(audio, rate)
    start, end = speech_span(x)
    return f"{voice.family}/{voice.name}", x[start:end]


def _copy(job: tuple[str, np.ndarray, int]) -> tuple[str, np.ndarray]:
    vocoder, x, seed = job
    return f"copysynth/{vocoder}", copysynth.VOCODERS[vocoder](x, np.random.default_rng(seed)).astype(
        np.float32
    )


def build_pools(
    librispeech: Path,
    exclude_speakers: set[str],
    exclude_sentences: set[str],
    sizes: PoolSizes,
    seed: int,
    workers: int,
) -> Pools:
    """The real and synthetic material examples are cut from (synthesis runs in ``workers`` processes)."""
    paths = [
        p
        for p in sorted(librispeech.glob("*.flac"))
        if split_of_speaker(p.name.split("-")[0]) == "train" and p.name.split("-")[0] not in exclude_speakers
    ]
    real = [to16k(*sf.read(p, dtype="float32")) for p in paths]
    sentences = [s for s in texts.sentences("train") if s not in exclude_sentences]
    rng = np.random.default_rng(seed)
    jobs = []
    for voice in tts.VOICES:
        if voice.family not in sizes.families:
            continue
        for _ in range(sizes.per_voice.get(voice.family, sizes.per_voice["other"])):
            a, b = rng.choice(len(sentences), 2, replace=False)
            text = sentences[a] if rng.random() < 0.5 else f"{sentences[a]} {sentences[b]}"
            jobs.append((voice, text, int(rng.integers(1 << 30))))
    copies = []
    for vocoder in sizes.vocoders:
        for _ in range(sizes.copies_per_vocoder):
            x = real[int(rng.integers(len(real)))]
            start = int(rng.integers(0, max(1, len(x) - 6 * SR)))
            copies.append((vocoder, x[start : start + 6 * SR], int(rng.integers(1 << 30))))
    started = time.monotonic()
    # spawn, not fork: a forked child of a process that has run torch can hang in its thread pools
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        made = pool.map(_synthesize, jobs, chunksize=4) + pool.map(_copy, copies, chunksize=2)
    synthetic: dict[str, list[np.ndarray]] = defaultdict(list)
    for voice, clip in made:
        if len(clip) > SR // 2:
            synthetic[voice].append(clip)
    logger.info(
        "localizer pools: %d real recordings, %d synthetic clips of %d voices in %.0f s",
        len(real),
        sum(len(c) for c in synthetic.values()),
        len(synthetic),
        time.monotonic() - started,
    )
    return Pools(real, dict(synthetic))


def asterisk_recordings(folder: Path = ASTERISK_DIR, seconds: float = 15.0) -> list[np.ndarray]:
    """The corpus's train Asterisk voices (telephone prompts, several languages) as ~``seconds`` long
    recordings: each voice's prompts end to end, in name order. Real speech unlike LibriSpeech's."""
    out = []
    for voice, split in ASTERISK_SPLITS.items():
        if split != "train":
            continue
        prompts = [read16k(p) for p in sorted((folder / voice).rglob("*.wav"))]
        current: list[np.ndarray] = []
        for prompt in prompts:
            current.append(prompt)
            if sum(len(c) for c in current) >= seconds * SR:
                out.append(np.concatenate(current))
                current = []
    return out


def _level(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-9


def _stretch(pools: Pools, rng: np.random.Generator, seconds: float) -> np.ndarray:
    voices = sorted(pools.synthetic)
    clips = pools.synthetic[voices[int(rng.integers(len(voices)))]]
    parts = [clips[i] for i in rng.permutation(len(clips))]
    joined = np.concatenate(parts * (1 + int(seconds * SR / sum(len(p) for p in parts))))
    start = int(rng.integers(0, max(1, len(joined) - int(seconds * SR))))
    return joined[start : start + int(seconds * SR)]


def _channel(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    draw = rng.random()
    if draw < 0.3:
        return audio
    if draw < 0.5:
        return augment.telephone(audio, rng)
    if draw < 0.6:
        return augment.add_noise(audio, rng, 10.0, 35.0)
    if draw < 0.72:
        return augment.codec_round_trip(audio, rng)
    return channels.random_chain(audio, rng)[0]


# What one source's recording chain may have done to it before the pieces were joined.
_SOURCE: tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], ...] = (
    channels.reverb,
    channels.lowpass,
    channels.rawboost,
    channels.phone,
    augment.codec_round_trip,
    lambda x, rng: augment.add_noise(x, rng, 15.0, 40.0),
)


def _source(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``audio`` through one source channel (or none), at a level within +-6 dB."""
    draw = int(rng.integers(len(_SOURCE) + 1))
    if draw < len(_SOURCE):
        audio = _SOURCE[draw](audio, rng)
    return (audio * np.float32(10 ** (rng.uniform(-6.0, 6.0) / 20))).astype(np.float32)


def _cut(recording: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    tiled = np.tile(recording, -(-n // len(recording)))
    start = int(rng.integers(0, len(tiled) - n + 1))
    return tiled[start : start + n]


def _real(pools: Pools, rng: np.random.Generator, n: int, mixed_share: float) -> tuple[np.ndarray, bool]:
    """``n`` samples of real speech: one recording, or (``mixed_share`` of the time) two to four pieces of
    different recordings, each through its own source channel; and whether it is pieces."""
    if rng.random() >= mixed_share:
        return _cut(pools.real[int(rng.integers(len(pools.real)))], n, rng), False
    bounds = np.sort(rng.choice(np.arange(SR, n - SR), int(rng.integers(1, 4)), replace=False))
    lengths = np.diff(np.concatenate([[0], bounds, [n]]))
    picks = rng.choice(len(pools.real), len(lengths), replace=len(pools.real) < len(lengths))
    pieces = [
        _source(_cut(pools.real[int(i)], int(k), rng), rng) for i, k in zip(picks, lengths, strict=True)
    ]
    return np.concatenate(pieces), True


def example(pools: Pools, rng: np.random.Generator, mixed_share: float) -> tuple[np.ndarray, np.ndarray]:
    """One recording's features ``(MELS, T)`` and frame labels ``(T,)`` (see the module docstring)."""
    audio, mixed = _real(pools, rng, int(rng.uniform(6.0, 16.0) * SR), mixed_share)
    kind = rng.random()
    spans: list[tuple[int, int]] = []
    if kind < 0.15:
        pass
    elif kind < 0.30:
        audio = _stretch(pools, rng, rng.uniform(4.0, 10.0))
        spans = [(0, len(audio))]
    else:
        for _ in range(2 if kind > 0.88 else 1):
            fake = _stretch(pools, rng, rng.uniform(1.0, 7.0))
            if mixed and rng.random() < 0.5:
                fake = _source(fake, rng)
            a, b = speech_span(audio)
            real_level = _level(audio[a:b] if b > a else audio)
            fake = fake * np.float32(real_level / _level(fake) * 10 ** (rng.uniform(-4.0, 4.0) / 20))
            cut = int(rng.integers(0, len(audio) + 1))
            spans = [(s + len(fake) if s >= cut else s, e + len(fake) if e > cut else e) for s, e in spans]
            spans.append((cut, cut + len(fake)))
            audio = np.concatenate([audio[:cut], fake, audio[cut:]])
    if not np.isfinite(audio).all():
        raise ValueError("an example's audio is not finite")
    audio = _channel(np.clip(audio, -1.0, 1.0).astype(np.float32), rng)
    synthetic = np.zeros(len(audio), dtype=np.float32)
    for s, e in spans:
        synthetic[s:e] = 1.0
    f = features(audio)
    return f.astype(np.float16), frame_labels(synthetic, f.shape[1]).astype(np.float16)


_POOLS: list[Pools] = []


def _init(pools: Pools) -> None:
    torch.set_num_threads(1)
    _POOLS[:] = [pools]


def _example(job: tuple[int, float]) -> tuple[np.ndarray, np.ndarray]:
    seed, mixed_share = job
    return example(_POOLS[0], np.random.default_rng(seed), mixed_share)


def examples(
    pools: Pools, n: int, seed: int, workers: int, mixed_share: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` examples; example ``i`` depends only on ``seed``, ``i`` and ``mixed_share``, whatever
    ``workers`` is."""
    jobs = [(seed * 1_000_003 + i, mixed_share) for i in range(n)]
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init, initargs=(pools,)) as pool:
        return pool.map(_example, jobs, chunksize=16)


def _crops(
    data: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, batch: int, frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(batch):
        f, y = data[int(rng.integers(len(data)))]
        if f.shape[1] < frames:
            f = np.pad(f, ((0, 0), (0, frames - f.shape[1])), mode="wrap")
            y = np.pad(y, (0, frames - len(y)), mode="wrap")
        start = int(rng.integers(0, f.shape[1] - frames + 1))
        xs.append(f[:, start : start + frames])
        ys.append(y[start : start + frames])
    return torch.from_numpy(np.stack(xs).astype(np.float32)), torch.from_numpy(
        np.stack(ys).astype(np.float32)
    )


def frame_accuracy(net: nn.Module, data: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Share of frames wholly real or wholly synthetic that the net calls right at 0.5."""
    net.eval()
    right = total = 0
    with torch.no_grad():
        for f, y in data:
            p = torch.sigmoid(net(torch.from_numpy(f.astype(np.float32))[None]))[0].numpy()
            sure = (y == 0) | (y == 1)
            right += int(((p > 0.5) == (y > 0.5))[sure].sum())
            total += int(sure.sum())
    net.train()
    return right / max(total, 1)


@dataclass(frozen=True)
class Member:
    """One net of the ensemble: the seed of its examples and its training, and the share of its examples
    whose real speech is pieces of several recordings."""

    seed: int
    mixed_share: float


# One member on single recordings, one on pieces half the time: alone, the first calls a change of
# recording synthetic and the second clips the stretches' edges; averaged, they do neither as often.
MEMBERS = (Member(1234, 0.0), Member(1235, 0.5))
DEV_MIXED_SHARE = 0.5  # the dev examples, on which the placement is picked


@dataclass(frozen=True)
class FitOptions:
    steps: int = 2000
    batch: int = 24
    crop_frames: int = 400  # 8 s
    lr: float = 2e-3
    seed: int = 1234


def fit(
    train: list[tuple[np.ndarray, np.ndarray]],
    dev: list[tuple[np.ndarray, np.ndarray]],
    options: FitOptions,
    log_every: int = 250,
) -> tuple[LocNet, list[dict]]:
    """Frame-wise binary cross-entropy with AdamW and a one-cycle schedule; the dev split's frame
    accuracy is logged, never used to pick anything."""
    torch.manual_seed(options.seed)
    net = LocNet()
    optimizer = torch.optim.AdamW(net.parameters(), options.lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, options.lr, total_steps=options.steps)
    rng = np.random.default_rng(options.seed)
    history = []
    started = time.monotonic()
    for step in range(options.steps):
        x, y = _crops(train, rng, options.batch, options.crop_frames)
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % log_every == 0 or step + 1 == options.steps:
            accuracy = frame_accuracy(net, dev)
            history.append({"step": step + 1, "loss": loss.item(), "dev_frame_accuracy": accuracy})
            logger.info(
                "step %d: loss %.4f, dev frame accuracy %.4f (%.0f s)",
                step + 1,
                loss.item(),
                accuracy,
                time.monotonic() - started,
            )
    return net.eval(), history


READ_S = 4.0  # about a window: what the service reads either side of a stretch the detector found
PLACEMENTS = [
    edges.Placement(threshold, smooth, run, gap)
    for threshold in (0.5, 0.6, 0.7)
    for smooth in (0.1, 0.3)
    for run in (0.3, 0.6, 1.0)
    for gap in (0.5, 1.0, 2.0)
]


@dataclass(frozen=True)
class EdgeFit:
    """How a file's segments found one synthetic stretch, in seconds: the share of it they cover, how far
    the first and last of those over it start and end from it (NaN when none is), and the real speech
    they and the segments over no synthetic speech mark before and after it."""

    coverage: float
    start: float
    end: float
    before: float
    after: float

    @property
    def ok(self) -> bool:
        """Issue 21's bar: at least 90 % covered, both edges within 1 s, at most 2.5 s of real speech
        marked on either side (a hair of slack for frame indices turned into seconds)."""
        return (
            self.coverage >= 0.9
            and max(abs(self.start), abs(self.end)) <= 1.0 + 1e-9
            and max(self.before, self.after) <= 2.5 + 1e-9
        )


def edge_fit(
    stretch: tuple[float, float],
    segments: list[tuple[float, float]],
    others: Sequence[tuple[float, float]] = (),
) -> EdgeFit:
    """:class:`EdgeFit` of ``segments`` for ``stretch``; segments over one of the file's ``others``
    stretches are that stretch's business, not real speech marked."""
    f0, f1 = stretch
    over = [(a, b) for a, b in segments if b > f0 and a < f1]
    stray = [(a, b) for a, b in segments if all(b <= o0 or a >= o1 for o0, o1 in (stretch, *others))]
    return EdgeFit(
        coverage=sum(min(b, f1) - max(a, f0) for a, b in over) / (f1 - f0),
        start=min(a for a, _ in over) - f0 if over else float("nan"),
        end=max(b for _, b in over) - f1 if over else float("nan"),
        before=sum(max(0.0, min(b, f0) - a) for a, b in over + stray),
        after=sum(max(0.0, b - max(a, f1)) for a, b in over + stray),
    )


def _seconds(runs: list[tuple[int, int]]) -> list[tuple[float, float]]:
    return [(a * FRAME_S, b * FRAME_S) for a, b in runs]


def choose_placement(
    net: nn.Module, dev: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[edges.Placement, list[dict]]:
    """The :data:`PLACEMENTS` entry under which the most dev stretches meet the bar plus the most
    real-only dev recordings get no run (the first of equals). Each stretch is judged on the frames the
    service reads around it, :data:`READ_S` either side (``edges.placed`` reads from the window before a
    segment the detector found to the window after it); a real-only recording on all its frames, as a
    detector's false alarm can fall anywhere."""
    net.eval()
    with torch.no_grad():
        probs = [torch.sigmoid(net(torch.from_numpy(f.astype(np.float32))[None]))[0].numpy() for f, _ in dev]
    truths = [
        _seconds(edges.runs(y.astype(np.float32), FRAME_S, edges.Placement(0.5, FRAME_S, 0.0, 0.0)))
        for _, y in dev
    ]
    table = []
    for placement in PLACEMENTS:
        met = clean = 0
        for p, truth in zip(probs, truths, strict=True):
            if not truth:
                clean += not edges.runs(p, FRAME_S, placement)
            for f0, f1 in truth:
                first = max(0, round((f0 - READ_S) / FRAME_S))
                last = min(len(p), round((f1 + READ_S) / FRAME_S))
                found = _seconds(
                    [(first + a, first + b) for a, b in edges.runs(p[first:last], FRAME_S, placement)]
                )
                met += edge_fit((f0, f1), found, truth).ok
        table.append({**placement.__dict__, "stretches_met": met, "real_only_clean": clean})
    best = max(range(len(table)), key=lambda i: (table[i]["stretches_met"] + table[i]["real_only_clean"], -i))
    logger.info("placement on dev: %s", table[best])
    return PLACEMENTS[best], table


def save(net: LocEnsemble, placement: edges.Placement, path: Path, provenance: dict) -> None:
    """The weights, the placement picked with them and how they were made, loadable with
    ``torch.load(weights_only=True)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    first = net.members[0]
    torch.save(
        {
            "state_dict": net.state_dict(),
            "members": len(net.members),
            "width": first.inp.out_channels,
            "dilations": [int(b.dilation[0]) for b in first.blocks],
            "placement": placement.__dict__,
            "provenance": provenance,
        },
        path,
    )
