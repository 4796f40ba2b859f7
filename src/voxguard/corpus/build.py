"""``voxguard corpus``: assemble a labelled, manifested corpus from local real speech and local synthesis.

Every file is written as 16 kHz mono FLAC (the rate every input reaches the model at) with a manifest
row saying where it came from: label, family (the unit of leave-one-family-out evaluation), engine and
voice, source and licence, channel, speaker and split. Splits are by speaker for real speech and its
copy-synthesis, by sentence for text-to-speech, so dev and test hold voices, speakers and words that
training never heard. Channels (telephone, codecs, noise, reverberation) are not baked in here: training
applies them to both classes at random, and the evaluation makes its own channel copies.

Kept out on purpose and never read: anything from the tortoise-tts repository, Resemblyzer's
``librispeech_test-other`` and its interview recordings (the held-out checks of ../shared/corpus).
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import zlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf

from ..audio.options import SAMPLE_RATE
from . import channels, copysynth, texts, tts

logger = logging.getLogger(__name__)

BONAFIDE, SPOOF = "bonafide", "spoof"
SPLITS = ("train", "dev", "test")
MANIFEST = "manifest.csv"
ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
# Asterisk prompt voices (Debian asterisk-core-sounds-*-wav, CC BY-SA 3.0; asterisk-prompt-*): one
# speaker each, so the split is by voice.
ASTERISK_SPLITS = {
    "en_US_f_Allison": "train",
    "es_MX_f_Allison": "train",
    "it_IT_f_Menardi": "train",
    "fr_CA_f_June": "dev",
    "it_IT_m_Carlo": "test",
    "ru_RU_f_IvrvoiceRU": "test",
}
FSDD_SPLITS = {"nicolas": "dev", "theo": "test"}  # the other four FSDD speakers train


@dataclass(frozen=True)
class Entry:
    """One manifest row. ``segment`` is ``start-end`` seconds of synthetic speech in a spliced file."""

    path: str
    label: str
    family: str
    engine: str
    voice: str
    source: str
    licence: str
    channel: str
    speaker: str
    split: str
    duration_s: float = 0.0
    text: str = ""
    segment: str = ""
    parent: str = ""  # for a channel copy: the file it was made from


@dataclass(frozen=True)
class Sizes:
    """How many files of each kind; ``tiny`` exercises every path in seconds (tests), ``full`` trains."""

    per_tts_family: int  # training clips per text-to-speech family, shared among its voices
    per_vocoder: int
    fsdd_per_speaker: int
    asterisk_per_voice: int
    librispeech: int
    spliced: int
    train_copies: int = 2  # random channel chains per training file
    dev_copies: int = 2
    # plus one chain ending in a narrow-band call per training and dev file: real phone speech is what
    # a detector most often calls fake, so that channel gets a copy of its own
    narrowband_copies: int = 1

    @classmethod
    def named(cls, name: str) -> Sizes:
        if name == "tiny":
            return cls(1, 2, 1, 1, 6, 2)
        if name == "full":
            return cls(200, 150, 40, 70, 10_000, 60)
        raise ValueError(f"size must be tiny or full, got {name!r}")


@dataclass(frozen=True)
class Job:
    """One file to make: picklable, so jobs run in worker processes."""

    entry: Entry
    kind: str  # "copy" (decode and resample), "tts", "vocode", "splice", "fsdd", "channel"
    inputs: tuple[str, ...]
    seed: int
    start_s: float = 0.0
    length_s: float = 0.0


def split_of_speaker(speaker: str) -> str:
    """A LibriSpeech speaker's split, fixed by its id (the segment localizer's recipe uses it too)."""
    bucket = zlib.crc32(speaker.encode()) % 20
    return "test" if bucket < 3 else "dev" if bucket < 6 else "train"


def read16k(path: Path) -> np.ndarray:
    """Any local audio file as 16 kHz mono float32."""
    if path.suffix == ".g722":  # raw G.722, which only ffmpeg reads
        return channels.ffmpeg_decode(path.read_bytes(), "g722")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return to16k(audio.mean(axis=1), rate)


def to16k(x: np.ndarray, rate: int) -> np.ndarray:
    """Mono audio at ``rate`` resampled to 16 kHz float32."""
    if rate == SAMPLE_RATE:
        return x.astype(np.float32)
    return taf.resample(torch.from_numpy(x.astype(np.float32)), rate, SAMPLE_RATE).numpy()


def real_jobs(shared: Path, sizes: Sizes, seed: int) -> list[Job]:
    """Real speech found locally: LibriSpeech, FSDD, Asterisk prompts (incl. G.722) and the shared samples."""
    jobs: list[Job] = []
    libri = sorted((shared / "corpus" / "librispeech-train-clean-100").glob("*.flac"))[: sizes.librispeech]
    for path in libri:
        speaker = path.name.split("-")[0]
        jobs.append(
            _copy_job(
                path,
                "librispeech",
                f"libri-{speaker}",
                split_of_speaker(speaker),
                "LibriSpeech train-clean-100 (shared/corpus)",
                "CC BY 4.0",
                "audiobook-16k",
                seed,
            )
        )
    rng = np.random.default_rng(seed)
    fsdd = sorted((shared / "corpus" / "fsdd").glob("*.wav"))
    for speaker in sorted({p.name.split("_")[1] for p in fsdd}):
        own = [str(p) for p in fsdd if p.name.split("_")[1] == speaker]
        for i in range(sizes.fsdd_per_speaker):
            pick = tuple(rng.choice(own, size=int(rng.integers(5, 9)), replace=False))
            entry = Entry(
                f"bonafide/fsdd/{speaker}-{i:03d}.flac",
                BONAFIDE,
                "fsdd",
                "",
                "",
                "FSDD digits",
                "CC BY-SA 4.0",
                "digits-8k",
                f"fsdd-{speaker}",
                FSDD_SPLITS.get(speaker, "train"),
            )
            jobs.append(Job(entry, "fsdd", pick, seed + i))
    for voice, split in ASTERISK_SPLITS.items():
        files = sorted((ASTERISK_DIR / voice).rglob("*.wav"))
        if not files:
            logger.warning("no Asterisk prompts for %s (apt-get install asterisk-core-sounds-*-wav)", voice)
            continue
        for path in rng.permutation(np.array(files, dtype=object))[: sizes.asterisk_per_voice]:
            # Prompt names repeat across voices and folders (every language has digits/1.wav).
            name = f"{voice}/{Path(path).relative_to(ASTERISK_DIR / voice).with_suffix('').as_posix()}"
            jobs.append(
                _copy_job(
                    Path(path),
                    "asterisk",
                    f"asterisk-{voice}",
                    split,
                    f"Debian asterisk sounds ({voice})",
                    "CC BY-SA 3.0",
                    "telephone-8k",
                    seed,
                    name,
                )
            )
    g722 = sorted((ASTERISK_DIR / "en_US_f_Allison").glob("*.g722"))
    for path in rng.permutation(np.array(g722, dtype=object))[: max(1, sizes.asterisk_per_voice // 2)]:
        jobs.append(
            _copy_job(
                Path(path),
                "asterisk-g722",
                "asterisk-en_US_f_Allison",
                "train",
                "Debian asterisk-core-sounds-en-g722",
                "CC BY-SA 3.0",
                "g722-16k",
                seed,
            )
        )
    for path in sorted((shared / "samples").glob("*.*")):
        if path.suffix in (".flac", ".wav", ".mp3"):
            jobs.append(
                _copy_job(
                    path,
                    "samples",
                    "samples",
                    "test",
                    "shared/samples",
                    "CC BY 4.0 (VCTK) / test only (voicememo)",
                    "mixed",
                    seed,
                )
            )
    return jobs


def _copy_job(
    path: Path,
    family: str,
    speaker: str,
    split: str,
    source: str,
    licence: str,
    channel: str,
    seed: int,
    name: str | None = None,
) -> Job:
    """``name`` (default: the file's stem) places the copy at ``bonafide/<family>/<name>.flac``."""
    entry = Entry(
        f"bonafide/{family}/{name or path.stem}.flac",
        BONAFIDE,
        family,
        "",
        "",
        source,
        licence,
        channel,
        speaker,
        split,
    )
    return Job(entry, "copy", (str(path),), seed)


def tts_jobs(sizes: Sizes, seed: int) -> list[Job]:
    """Each voice reads sentences of every split; some clips join two sentences (longer than a window)."""
    jobs: list[Job] = []
    rng = np.random.default_rng(seed + 1)
    for voice in tts.VOICES:
        n = -(-sizes.per_tts_family // sum(v.family == voice.family for v in tts.VOICES))
        per_split = {"train": n, "dev": max(1, n // 6), "test": max(1, n // 4)}
        for split, count in per_split.items():
            pool = texts.sentences(split)
            for i in range(count):
                n = 1 if rng.random() < 0.5 else 2
                text = " ".join(pool[int(j)] for j in rng.choice(len(pool), size=n, replace=False))
                name = f"{voice.name.replace('+', '-')}-{split}-{i:03d}"
                entry = Entry(
                    f"spoof/{voice.family}/{name}.flac",
                    SPOOF,
                    voice.family,
                    voice.engine,
                    voice.name,
                    f"{voice.engine} (made here)",
                    voice.licence,
                    "clean",
                    f"{voice.engine}-{voice.name}",
                    split,
                    text=text,
                )
                jobs.append(Job(entry, "tts", (voice.engine, voice.name, text), int(rng.integers(2**31))))
    return jobs


def vocoder_jobs(real: Sequence[Job], sizes: Sizes, seed: int) -> list[Job]:
    """Copy-synthesis of 3-6 s stretches of LibriSpeech, each speaker in its own split; every vocoder's
    files sit in ``spoof/copysynth/`` whatever their family (``copysynth.FAMILY``)."""
    jobs: list[Job] = []
    rng = np.random.default_rng(seed + 2)
    libri = [j for j in real if j.entry.family == "librispeech"]
    for vocoder in copysynth.VOCODERS:
        for i in range(min(sizes.per_vocoder, len(libri) * 2)):
            source = libri[int(rng.integers(len(libri)))]
            length, start = float(rng.uniform(3.0, 6.0)), float(rng.uniform(0.0, 6.0))
            entry = replace(
                source.entry,
                path=f"spoof/copysynth/{vocoder}-{i:03d}.flac",
                label=SPOOF,
                family=copysynth.FAMILY[vocoder],
                engine=vocoder,
                voice=source.entry.speaker,
                source=f"{vocoder} copy-synthesis of {Path(source.inputs[0]).name}",
            )
            jobs.append(
                Job(entry, "vocode", (vocoder, source.inputs[0]), int(rng.integers(2**31)), start, length)
            )
    return jobs


def splice_jobs(real: Sequence[Job], sizes: Sizes, seed: int) -> list[Job]:
    """1-6 s of a recording replaced by its own copy-synthesis, or by a TTS sentence, inside real speech."""
    jobs: list[Job] = []
    rng = np.random.default_rng(seed + 3)
    libri = [j for j in real if j.entry.family == "librispeech" and j.entry.split != "train"]
    voices = [v for v in tts.VOICES if v.family in ("piper", "kokoro")]
    for i in range(min(sizes.spliced, len(libri))):
        source = libri[i % len(libri)]
        if rng.random() < 0.5:
            how: tuple[str, ...] = ("hifigan" if rng.random() < 0.5 else "world",)
        else:
            voice = voices[int(rng.integers(len(voices)))]
            how = (voice.engine, voice.name, texts.sentences("test")[int(rng.integers(8))])
        entry = replace(
            source.entry,
            path=f"spoof/spliced/{i:03d}.flac",
            label=SPOOF,
            family="spliced",
            engine=how[0],
            voice=how[1] if len(how) > 1 else source.entry.speaker,
            source=f"{Path(source.inputs[0]).name} with a {how[0]} stretch",
        )
        jobs.append(
            Job(
                entry,
                "splice",
                (source.inputs[0], *how),
                int(rng.integers(2**31)),
                float(rng.uniform(2.0, 6.0)),
                float(rng.uniform(1.0, 6.0)),
            )
        )
    return jobs


def _fsdd(inputs: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    parts = []
    for path in inputs:
        parts += [read16k(Path(path)), np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE), np.float32)]
    return np.concatenate(parts)


def _stretch(x: np.ndarray, start_s: float, length_s: float) -> np.ndarray:
    start = min(int(start_s * SAMPLE_RATE), max(0, len(x) - int(length_s * SAMPLE_RATE)))
    return x[start : start + int(length_s * SAMPLE_RATE)]


def _splice(job: Job, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    x = read16k(Path(job.inputs[0]))
    start = min(int(job.start_s * SAMPLE_RATE), len(x) - SAMPLE_RATE)
    if len(job.inputs) == 2:
        end = min(len(x), start + int(job.length_s * SAMPLE_RATE))
        fake = copysynth.VOCODERS[job.inputs[1]](x[start:end], rng)
        y = np.concatenate([x[:start], fake, x[end:]])
    else:
        voice = next(v for v in tts.VOICES if v.engine == job.inputs[1] and v.name == job.inputs[2])
        fake, rate = tts.synthesize(job.inputs[3], voice, rng)
        fake = to16k(fake, rate)
        rms = float(np.sqrt(np.mean(np.square(x[start : start + len(fake)], dtype=np.float64)))) or 0.05
        fake = fake * np.float32(rms / max(float(np.sqrt(np.mean(np.square(fake, dtype=np.float64)))), 1e-9))
        y = np.concatenate([x[:start], fake, x[start:]])
    return y, f"{start / SAMPLE_RATE:.2f}-{(start + len(fake)) / SAMPLE_RATE:.2f}"


def channel_jobs(entries: Sequence[Entry], sizes: Sizes, seed: int) -> list[Job]:
    """Random training chains for train and dev files; the held-out test channels for test files."""
    jobs: list[Job] = []
    babble = tuple(e.path for e in entries if e.family == "librispeech" and e.split == "test")
    for i, entry in enumerate(e for e in entries if not e.parent):
        if entry.split == "test":
            kinds = [*channels.TEST, *(["babble"] if babble else [])]
        else:
            kinds = [
                f"random{k}"
                for k in range(sizes.train_copies if entry.split == "train" else sizes.dev_copies)
            ]
            kinds += [f"narrowband{k}" for k in range(sizes.narrowband_copies)]
        for kind in kinds:
            path = str(Path(entry.path).with_suffix(f".{kind}.flac"))
            copy = replace(entry, path=path, parent=entry.path, channel=kind)
            jobs.append(
                Job(
                    copy,
                    "channel",
                    (kind, *(babble if kind == "babble" else ())),
                    seed + 7919 * i + len(jobs),
                )
            )
    return jobs


def _channel(job: Job, out: Path, rng: np.random.Generator) -> tuple[np.ndarray, Entry]:
    x, _ = sf.read(out / job.entry.parent, dtype="float32")
    kind = job.inputs[0]
    if kind == "babble":
        others = [sf.read(out / p, dtype="float32")[0] for p in job.inputs[1:] if p != job.entry.parent]
        return channels.babble(x, rng, others), job.entry
    if kind in channels.TEST:
        return channels.TEST[kind](x, rng), job.entry
    y, chain = channels.random_chain(x, rng, "narrowband" if kind.startswith("narrowband") else None)
    return y, replace(job.entry, channel=chain)


def make(job: Job, out: Path) -> Entry:
    """Make one file (in a worker process) and return its manifest row."""
    rng = np.random.default_rng(job.seed)
    entry = job.entry
    if job.kind == "copy":
        y = read16k(Path(job.inputs[0]))
    elif job.kind == "fsdd":
        y = _fsdd(job.inputs, rng)
    elif job.kind == "tts":
        voice = next(v for v in tts.VOICES if v.engine == job.inputs[0] and v.name == job.inputs[1])
        audio, rate = tts.synthesize(job.inputs[2], voice, rng)
        y = to16k(audio, rate)
    elif job.kind == "vocode":
        x = _stretch(read16k(Path(job.inputs[1])), job.start_s, job.length_s)
        y = copysynth.VOCODERS[job.inputs[0]](x, rng)
    elif job.kind == "splice":
        y, segment = _splice(job, rng)
        entry = replace(entry, segment=segment)
    elif job.kind == "channel":
        y, entry = _channel(job, out, rng)
    else:
        raise ValueError(f"unknown job kind {job.kind!r}")
    path = out / entry.path
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.max(np.abs(y), initial=0.0))
    sf.write(path, y / peak * 0.99 if peak > 0.99 else y, SAMPLE_RATE, subtype="PCM_16")
    return replace(entry, duration_s=round(len(y) / SAMPLE_RATE, 3))


def plan(shared: Path, sizes: Sizes, seed: int, families: Sequence[str] | None = None) -> list[Job]:
    """Every job, skipping engines that are not installed (logged, and absent from the manifest)."""
    real = real_jobs(shared, sizes, seed)
    jobs = [*real, *tts_jobs(sizes, seed), *vocoder_jobs(real, sizes, seed), *splice_jobs(real, sizes, seed)]
    missing = {e for e in tts.ENGINES if not tts.available(e)}
    for engine in sorted(missing):
        logger.warning("skipping %s: %s", engine, tts._probe(engine))
    kept = [
        j
        for j in jobs
        if not (j.kind in ("tts", "splice") and j.inputs[0 if j.kind == "tts" else 1] in missing)
    ]
    if families:
        kept = [j for j in kept if j.entry.family in families]
    paths = Counter(j.entry.path for j in kept)
    repeated = sorted(p for p, n in paths.items() if n > 1)
    if repeated:  # two sources at one path: the later would overwrite the earlier, even across splits
        raise ValueError(f"corpus plan: {len(repeated)} paths planned twice, e.g. {repeated[0]}")
    return kept


def build(
    shared: Path,
    out: Path,
    sizes: Sizes,
    seed: int = 1234,
    workers: int = 2,
    families: Sequence[str] | None = None,
) -> list[Entry]:
    """Make every planned file not already in ``out``'s manifest (a rerun resumes), then write it."""
    out.mkdir(parents=True, exist_ok=True)
    planned = plan(shared, sizes, seed, families)
    # A family is the plan's, not the manifest's: a corpus made before a family was split (HiFi-GAN
    # copies were once ``copysynth``) is relabelled, not remade.
    family = {j.entry.path: j.entry.family for j in planned}
    done = {
        e.path: replace(e, family=family.get(e.parent or e.path, e.family))
        for e in (read_manifest(out) if (out / MANIFEST).exists() else [])
    }
    jobs = [j for j in planned if j.entry.path not in done]
    entries = list(done.values())
    # Spawned, not forked: a fork of a process that already runs torch or other threads can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for stage, todo in (("sources", jobs), ("channel copies", None)):
            if todo is None:  # channel copies are made from the files the first stage wrote
                todo = [j for j in channel_jobs(entries, sizes, seed) if j.entry.path not in done]
            logger.info(
                "corpus: %d %s to make in %s (%d files already there)", len(todo), stage, out, len(done)
            )
            for i, entry in enumerate(pool.map(make, todo, [out] * len(todo), chunksize=4)):
                entries.append(entry)
                if (i + 1) % 500 == 0:
                    write_manifest(out, entries)
                    logger.info("corpus: %d/%d %s made", i + 1, len(todo), stage)
            write_manifest(out, entries)
    return entries


def write_manifest(out: Path, entries: Sequence[Entry]) -> None:
    names = [f.name for f in fields(Entry)]
    tmp = out / (MANIFEST + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, names)
        writer.writeheader()
        for entry in sorted(entries, key=lambda e: e.path):
            writer.writerow(asdict(entry))
    tmp.replace(out / MANIFEST)


def read_manifest(folder: Path) -> list[Entry]:
    with (folder / MANIFEST).open(newline="") as f:
        return [Entry(**{**row, "duration_s": float(row["duration_s"])}) for row in csv.DictReader(f)]
