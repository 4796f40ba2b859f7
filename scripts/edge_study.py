"""How well segments find a spliced synthetic stretch, before and after the edge search (docs/evaluation.md).

    python scripts/edge_study.py SAMPLES_DIR CORPUS_DIR OUT.jsonl [--files 8] [--model aasist]

Builds ``--files`` recordings of 15-20 s of real speech (the shared recordings end to end, or LibriSpeech
utterances of one speaker) with one synthetic stretch of 4-6 s (a local synthesiser's voice, at the real
speech's level) inserted at the start, the middle or the end, sends each through four channels (clean
FLAC, telephone, noise at 30 dB SNR, Ogg/Vorbis) and scores it with ``Pipeline.run``'s steps: the grid's
segments, the segments after one round of the edge search and after both, the windows each costs and the
seconds the model took. The summary (logged at the end) is what docs/evaluation.md quotes.

    python scripts/edge_study.py scan SAMPLES_DIR CORPUS_DIR SCAN.npz [--files 12]
    python scripts/edge_study.py replay SCAN.npz

``scan`` scores the same files once with half windows centred every ``STEP_S`` seconds; ``replay`` then
runs the edge search with other settings (rounds, strictness) on those scores, each probe taking the
nearest centre's, to show how far a search of half windows could go without rescoring.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from voxguard import edges
from voxguard.audio.decoding import decode
from voxguard.audio.options import SAMPLE_RATE, AudioOptions
from voxguard.audio.speech import speech_span
from voxguard.inference import Detector
from voxguard.pipeline import Pipeline
from voxguard.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
import verdict_study as vs

logger = logging.getLogger("edge_study")
CHANNELS = ("clean", "telephone", "noise30", "vorbis")
POSITIONS = ("start", "middle", "end")
STEP_S = 0.25  # the scan's spacing of half-window centres


def _bases(samples: Path, corpus: Path, rng: np.random.Generator, n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` real recordings of 15-20 s: alternately the shared recordings and one LibriSpeech speaker."""
    shared = vs.real_recordings(samples, rng)
    speakers = sorted(corpus.glob("*.flac"))
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


def spliced(samples: Path, corpus: Path, n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` recordings with a 4-6 s synthetic stretch at a random point near the start, middle or end."""
    voices: dict[str, list[np.ndarray]] = defaultdict(list)
    for name, audio in vs.synthetic_set():
        voices[name.rsplit("-", 1)[0]].append(audio)
    names = sorted(voices)
    files = []
    for i, (base_name, base) in enumerate(_bases(samples, corpus, rng, n)):
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
    """One file as ``Pipeline.run`` scores it, keeping each stage's segments, windows and model seconds."""
    audio, windows = pipeline.windows(data)
    started = time.perf_counter()
    verdict = pipeline.verdict(audio, windows, detector.scores(windows.batch))
    grid_s = time.perf_counter() - started
    search = pipeline.edge_search(audio, verdict)
    stages, probes = [], 0
    started = time.perf_counter()
    while (batch := search.probes()) is not None:
        search.feed(detector.scores(batch))
        probes += len(batch)
        stages.append(_segments(search.refined(verdict)))
    return {
        "prediction": verdict.prediction,
        "grid": _segments(verdict),
        "one_round": stages[0] if stages else _segments(verdict),
        "refined": stages[-1] if stages else _segments(verdict),
        "windows": len(windows.spans),
        "probes": probes,
        "grid_s": grid_s,
        "probe_s": time.perf_counter() - started,
    }


def _files(args: argparse.Namespace) -> list[tuple[str, str, list[float], bytes]]:
    """The study's files in its order (one generator draws the splices, then every channel copy)."""
    rng = np.random.default_rng(21)
    return [
        (f["name"], channel, f["fake_s"], vs.through(channel, f["audio"], rng))
        for f in spliced(args.samples, args.corpus, args.files, rng)
        for channel in CHANNELS
    ]


def study(args: argparse.Namespace) -> None:
    detector = Detector.load(args.model, checkpoint_dir=args.checkpoint_dir, engine="fast", device="cpu")
    pipeline = Pipeline(
        Settings().audio,
        Settings().rule.for_loaded(detector.info),
    )
    with args.out.open("w") as out:
        for name, channel, fake_s, data in _files(args):
            row = score(pipeline, detector, data)
            row.update(name=name, channel=channel, fake_s=fake_s)
            out.write(json.dumps(row) + "\n")
            out.flush()
            logger.info("%s %s %s -> %s", name, channel, np.round(fake_s, 2), row["refined"])


def _measure(segments: list[list[float]], fake: list[float]) -> dict:
    """Coverage of the stretch, its edges' errors and the real speech marked on either side."""
    f0, f1 = fake
    covered = sum(max(0.0, min(b, f1) - max(a, f0)) for a, b in segments)
    over = [s for s in segments if s[1] > f0 and s[0] < f1]
    before = sum(max(0.0, min(b, f0) - a) for a, b in segments)
    after = sum(max(0.0, b - max(a, f1)) for a, b in segments)
    start = min(s[0] for s in over) - f0 if over else float("nan")
    end = max(s[1] for s in over) - f1 if over else float("nan")
    ok = covered / (f1 - f0) >= 0.9 and abs(start) <= 1 and abs(end) <= 1 and before <= 2.5 and after <= 2.5
    return {
        "coverage": covered / (f1 - f0),
        "start": start,
        "end": end,
        "before": before,
        "after": after,
        "ok": ok,
    }


def scan(args: argparse.Namespace) -> None:
    """Each file's grid margins and its half windows' margins every ``STEP_S``, in one ``.npz``."""
    detector = Detector.load(args.model, checkpoint_dir=args.checkpoint_dir, engine="fast", device="cpu")
    pipeline = Pipeline(
        Settings().audio,
        Settings().rule.for_loaded(detector.info),
    )
    arrays: dict[str, np.ndarray] = {
        "offset": np.array(detector.info.score_offset),
        "scale": np.array(detector.info.score_scale),
        "local_margin": np.array(
            np.nan if detector.info.local_margin is None else detector.info.local_margin
        ),
    }
    for i, (name, channel, fake_s, data) in enumerate(_files(args)):
        audio, windows = pipeline.windows(data)
        centres = np.arange(0.0, len(audio.waveform) / SAMPLE_RATE + 1e-9, STEP_S)
        batch, _ = edges.half_windows(audio.waveform, list(centres), Settings().audio)
        arrays.update(
            {
                f"{i}/meta": np.array(json.dumps({"name": name, "channel": channel, "fake_s": fake_s})),
                f"{i}/data": np.frombuffer(data, dtype=np.uint8),
                f"{i}/grid": detector.scores(windows.batch),
                f"{i}/half": detector.scores(batch),
            }
        )
        logger.info("%s %s: %d half windows", name, channel, len(centres))
    np.savez(args.out, **arrays)


def replay(path: Path, rounds: int, strictness: float) -> list[dict]:
    """The edge search with ``rounds`` and ``strictness`` on a scan's scores (no model runs)."""
    scanned = np.load(path)
    scale = float(scanned["scale"]) if "scale" in scanned.files else 1.0  # scans made before scales: 1
    local = float(scanned["local_margin"]) if "local_margin" in scanned.files else float("nan")
    rule = Settings().rule.for_model(float(scanned["offset"]), scale, None if np.isnan(local) else local)
    pipeline = Pipeline(Settings().audio, rule)
    edges.ROUNDS, edges.STRICTNESS = rounds, strictness  # the module's settings, for this process only
    rows = []
    for i in itertools.count():
        if f"{i}/meta" not in scanned:
            break
        meta = json.loads(str(scanned[f"{i}/meta"]))
        audio, windows = pipeline.windows(scanned[f"{i}/data"].tobytes())
        verdict = pipeline.verdict(audio, windows, scanned[f"{i}/grid"])
        half = scanned[f"{i}/half"]
        search, probes = pipeline.edge_search(audio, verdict), 0
        while search.probes() is not None:
            search.feed(half[[min(round(c / STEP_S), len(half) - 1) for c in search.centres]])
            probes += len(search.centres)
        refined = _segments(search.refined(verdict))
        rows.append(
            {
                **meta,
                "grid": _segments(verdict),
                "refined": refined,
                "windows": len(windows.spans),
                "probes": probes,
            }
        )
    return rows


def summary(rows: list[dict]) -> str:
    """Per stage and channel: files passing the issue's bar, coverage, edge errors, real marked, cost."""
    found = [r for r in rows if r["grid"]]
    alone = [r for r in found if all(_measure([s], r["fake_s"])["coverage"] > 0 for s in r["grid"])]
    lines = [
        f"{len(found)}/{len(rows)} files called FAKE; measured on those. {len(found) - len(alone)} of them "
        "also have a segment away from the stretch (a false alarm on real speech); 'alone' leaves them out"
    ]
    for stage in ("grid", "one_round", "refined"):
        for channel in (*CHANNELS, "all", "alone"):
            some = alone if channel == "alone" else [r for r in found if channel in ("all", r["channel"])]
            m = [_measure(r[stage], r["fake_s"]) for r in some]
            if not m:
                continue
            cover = [x["coverage"] for x in m]
            lines.append(
                f"{stage:9} {channel:9} pass {sum(x['ok'] for x in m)}/{len(m)}  "
                f"coverage mean {np.mean(cover):.2f} min {min(cover):.2f}  "
                f"|start err| max {np.nanmax([abs(x['start']) for x in m]):.2f}  "
                f"|end err| max {np.nanmax([abs(x['end']) for x in m]):.2f}  "
                f"real marked before max {max(x['before'] for x in m):.2f} "
                f"after max {max(x['after'] for x in m):.2f}"
            )
    windows = sum(r["windows"] for r in rows)
    ratios = [(r["windows"] + r["probes"]) / r["windows"] for r in rows]
    seconds = sum(r["grid_s"] for r in rows)
    lines.append(
        f"cost: windows {windows} + probes {sum(r['probes'] for r in rows)} = "
        f"{(windows + sum(r['probes'] for r in rows)) / windows:.2f}x (per file mean {np.mean(ratios):.2f}x, "
        f"max {max(ratios):.2f}x); model seconds {(seconds + sum(r['probe_s'] for r in rows)) / seconds:.2f}x"
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
    run.add_argument("--files", type=int, default=8)
    run.add_argument("--model", default="aasist")
    run.add_argument("--checkpoint-dir", default=None)
    scanning = sub.add_parser("scan")
    for name in ("samples", "corpus", "out"):
        scanning.add_argument(name, type=Path)
    scanning.add_argument("--files", type=int, default=12)
    scanning.add_argument("--model", default="aasist")
    scanning.add_argument("--checkpoint-dir", default=None)
    replaying = sub.add_parser("replay")
    replaying.add_argument("scan", type=Path)
    report = sub.add_parser("report")
    report.add_argument("rows", type=Path)
    args = parser.parse_args()
    if args.command == "score":
        torch.set_num_threads(1)
        study(args)
    elif args.command == "scan":
        scan(args)
    elif args.command == "replay":
        for rounds, strictness in ((2, 0.5), (2, 0.25), (2, 0.75), (3, 0.5), (6, 0.0), (6, 0.25), (6, 0.5)):
            rows = replay(args.scan, rounds, strictness)
            passed = [_measure(r["refined"], r["fake_s"]) for r in rows if r["grid"]]
            cost = sum(r["windows"] + r["probes"] for r in rows) / sum(r["windows"] for r in rows)
            logger.info(
                "rounds %d, strictness %.2f: %d/%d files meet the bar, %d cover 90 %%, "
                "%d/%d edges within 1 s, %.2fx the windows",
                rounds,
                strictness,
                sum(m["ok"] for m in passed),
                len(rows),
                sum(m["coverage"] >= 0.9 for m in passed),
                sum((abs(m["start"]) <= 1) + (abs(m["end"]) <= 1) for m in passed),
                2 * len(passed),
                cost,
            )
    else:
        logger.info("%s", summary([json.loads(line) for line in args.rows.open()]))


if __name__ == "__main__":
    main()
