"""How well segments find a spliced synthetic stretch, on the grid and with the localizer.

    python scripts/edge_study.py score SAMPLES_DIR CORPUS_DIR OUT.jsonl [--files 12] [--seed 21] [--unseen]
    python scripts/edge_study.py report OUT.jsonl

Builds ``--files`` recordings of 15-20 s of real speech (the shared recordings end to end, or LibriSpeech
utterances of one speaker) with one synthetic stretch of 4-6 s (a local synthesiser's voice, at the real
speech's level) inserted at the start, the middle or the end, sends each through four channels (clean
FLAC, telephone, noise at 30 dB SNR, Ogg/Vorbis) and scores it with ``Pipeline.run``'s steps: the grid's
segments, the segments the localizer places, and the seconds each took. ``report`` prints the summary
docs/evaluation.md quotes: per channel, the files meeting issue 21's bar.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from voxguard.audio.decoding import decode
from voxguard.audio.options import SAMPLE_RATE, AudioOptions
from voxguard.audio.speech import speech_span
from voxguard.corpus.build import split_of_speaker
from voxguard.inference import Detector
from voxguard.model.localizer import Localizer
from voxguard.pipeline import Pipeline
from voxguard.settings import Settings
from voxguard.training.localizer import edge_fit

sys.path.insert(0, str(Path(__file__).parent))
import verdict_study as vs

logger = logging.getLogger("edge_study")
CHANNELS = ("clean", "telephone", "noise30", "vorbis")
POSITIONS = ("start", "middle", "end")
FILE_SEED = 21
FILES = 12  # the measured study's --files


def _bases(
    samples: Path, corpus: Path, rng: np.random.Generator, n: int, unseen: bool = False
) -> list[tuple[str, np.ndarray]]:
    """``n`` real recordings of 15-20 s: alternately the shared recordings and one LibriSpeech speaker
    (``unseen``: only speakers outside the corpus's train split, which no recipe trains on)."""
    shared = vs.real_recordings(samples, rng)
    speakers = [
        p
        for p in sorted(corpus.glob("*.flac"))
        if not unseen or split_of_speaker(p.name.split("-")[0]) != "train"
    ]
    out = []
    for i in range(n):
        if i % 2:
            path = speakers[int(rng.integers(len(speakers)))]
            base, name = decode(path.read_bytes()).waveform, path.stem
        else:
            name, base = shared[i % len(shared)]
        while len(base) < 25 * SAMPLE_RATE:
            base = np.concatenate([base, base])
        out.append((name, base[: round(rng.uniform(15.0, 20.0) * SAMPLE_RATE)]))
    return out


def librispeech_speakers(samples: Path, corpus: Path) -> set[str]:
    """The LibriSpeech speakers this study's files are made of (its seed, its draws), which the segment
    localizer's training leaves out."""
    bases = _bases(samples, corpus, np.random.default_rng(FILE_SEED), FILES)
    return {name.split("-")[0] for name, _ in bases if (corpus / f"{name}.flac").exists()}


def spliced(
    samples: Path, corpus: Path, n: int, rng: np.random.Generator, unseen: bool = False
) -> list[dict]:
    """``n`` recordings with a 4-6 s synthetic stretch at a random point near the start, middle or end."""
    voices: dict[str, list[np.ndarray]] = defaultdict(list)
    for name, audio in vs.synthetic_set():
        voices[name.rsplit("-", 1)[0]].append(audio)
    names = sorted(voices)
    files = []
    for i, (base_name, base) in enumerate(_bases(samples, corpus, rng, n, unseen)):
        seconds = float(rng.uniform(4.0, 6.0))
        voice = names[i % len(names)]
        fake = vs._synthetic_stretch(voices[voice], seconds, AudioOptions())
        fake = fake * np.float32(vs._level(base[slice(*speech_span(base))]) / max(vs._level(fake), 1e-9))
        position = POSITIONS[i % 3]
        at = {
            "start": rng.uniform(0.0, 1.0),
            "middle": rng.uniform(0.3, 0.6) * len(base) / SAMPLE_RATE,
            "end": len(base) / SAMPLE_RATE - rng.uniform(0.0, 1.0),
        }[position]
        cut = round(at * SAMPLE_RATE)
        files.append(
            {
                "name": f"{base_name}-{position}-{voice}-{seconds:.2f}s",
                "audio": np.concatenate([base[:cut], fake, base[cut:]]),
                "fake_s": [cut / SAMPLE_RATE, (cut + len(fake)) / SAMPLE_RATE],
            }
        )
    return files


def _segments(verdict) -> list[list[float]]:
    return [[s.start_s, s.end_s] for s in verdict.decision.segments]


def score(pipeline: Pipeline, detector: Detector, data: bytes) -> dict:
    """One file as ``Pipeline.run`` scores it, keeping the grid's segments and the placed ones, and the
    seconds the detector's windows and the localizer took."""
    audio, windows = pipeline.windows(data)
    started = time.perf_counter()
    verdict = pipeline.verdict(audio, windows, detector.scores(windows.batch))
    grid_s = time.perf_counter() - started
    started = time.perf_counter()
    refined = pipeline.refined(audio, verdict)
    return {
        "prediction": verdict.prediction,
        "grid": _segments(verdict),
        "refined": _segments(refined),
        "windows": len(windows.spans),
        "grid_s": grid_s,
        "localizer_s": time.perf_counter() - started,
    }


def _files(args: argparse.Namespace) -> list[tuple[str, str, list[float], bytes]]:
    """The study's files in its order (one generator draws the splices, then every channel copy)."""
    rng = np.random.default_rng(args.seed)
    return [
        (f["name"], channel, f["fake_s"], vs.through(channel, f["audio"], rng))
        for f in spliced(args.samples, args.corpus, args.files, rng, args.unseen)
        for channel in CHANNELS
    ]


def study(args: argparse.Namespace) -> None:
    detector = Detector.load(args.model, checkpoint_dir=args.checkpoint_dir, engine="fast", device="cpu")
    pipeline = Pipeline(Settings().audio, Settings().rule.for_loaded(detector.info), Localizer.load())
    with args.out.open("w") as out:
        for name, channel, fake_s, data in _files(args):
            row = score(pipeline, detector, data)
            row.update(name=name, channel=channel, fake_s=fake_s)
            out.write(json.dumps(row) + "\n")
            out.flush()
            logger.info("%s %s %s -> %s", name, channel, np.round(fake_s, 2), row["refined"])


def summary(rows: list[dict]) -> str:
    """Per stage and channel: files passing the issue's bar, coverage, edge errors, real marked, cost."""
    found = [r for r in rows if r["grid"]]
    alone = [r for r in found if all(edge_fit(tuple(r["fake_s"]), [s]).coverage > 0 for s in r["grid"])]
    lines = [
        f"{len(found)}/{len(rows)} files called FAKE; measured on those. {len(found) - len(alone)} of them "
        "also have a segment away from the stretch (a false alarm on real speech); 'alone' leaves them out"
    ]
    for stage in ("grid", "refined"):
        for channel in (*CHANNELS, "all", "alone"):
            some = alone if channel == "alone" else [r for r in found if channel in ("all", r["channel"])]
            m = [edge_fit(tuple(r["fake_s"]), r[stage]) for r in some]
            if not m:
                continue
            cover = [x.coverage for x in m]
            errors = [x.start for x in m] + [x.end for x in m]
            lines.append(
                f"{stage:9} {channel:9} pass {sum(x.ok for x in m)}/{len(m)}  "
                f"coverage >= 90 % {sum(c >= 0.9 for c in cover)}  mean {np.mean(cover):.2f} "
                f"min {min(cover):.2f}  edges within 1 s {sum(abs(e) <= 1 for e in errors)}/{len(errors)}  "
                f"mean |edge error| {np.nanmean(np.abs(errors)):.2f}  "
                f"real marked <= 2.5 s {sum(max(x.before, x.after) <= 2.5 for x in m)}"
            )
    grid_s = sum(r["grid_s"] for r in rows)
    localizer_s = sum(r["localizer_s"] for r in rows)
    lines.append(
        f"cost: detector {grid_s:.1f} s on {sum(r['windows'] for r in rows)} windows, localizer "
        f"{localizer_s:.2f} s: {(grid_s + localizer_s) / grid_s:.3f}x"
    )
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("score")
    run.add_argument("samples", type=Path)
    run.add_argument("corpus", type=Path)
    run.add_argument("out", type=Path)
    run.add_argument("--files", type=int, default=FILES)
    run.add_argument("--seed", type=int, default=FILE_SEED, help="another seed draws other files")
    run.add_argument("--unseen", action="store_true", help="LibriSpeech speakers of no train split only")
    run.add_argument("--model", default="aasist")
    run.add_argument("--checkpoint-dir", default=None)
    report = sub.add_parser("report")
    report.add_argument("rows", type=Path)
    args = parser.parse_args()
    if args.command == "score":
        torch.set_num_threads(1)
        study(args)
    else:
        logger.info("%s", summary([json.loads(line) for line in args.rows.open()]))


if __name__ == "__main__":
    main()
