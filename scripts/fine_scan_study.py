"""An experiment, not what the service does: would half-length windows find short synthetic stretches?

    python scripts/fine_scan_study.py score  SAMPLES_DIR OUT.jsonl [--checkpoint-dir DIR]
    python scripts/fine_scan_study.py report OUT.jsonl

``score`` builds the same real-only and spliced recordings, through the same channels, as
``verdict_study.py splice`` (same seed) and keeps, besides the service's 4.04 s windows, every 2.02 s
stretch starting each 0.5 s, repeated twice to fill a model window as short audio is, with its speech
seconds. ``report`` prints, for several rules, what the service's rule plus the half windows would call
FAKE: the real-only recordings (false alarms) and the spliced ones by length of the inserted stretch
(docs/evaluation.md quotes it). Half windows cost four to six times the windows the service scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from verdict_study import CHANNELS, _called_fake, _segments, splice_files, through

from voxguard.audio.options import SAMPLE_RATE, WINDOW, AudioOptions
from voxguard.audio.speech import frame_levels, speech_seconds
from voxguard.audio.windows import level_windows, prepare
from voxguard.inference import Detector
from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE
from voxguard.scoring import Rule
from voxguard.settings import Settings

HALF = WINDOW // 2
HALF_HOP = SAMPLE_RATE // 2


def _half_windows(x: np.ndarray) -> tuple[list[int], np.ndarray, list[float]]:
    """Starts, model inputs (each half window twice) and speech seconds of every half window."""
    starts = list(range(0, len(x) - HALF + 1, HALF_HOP))
    if not starts or starts[-1] != len(x) - HALF:
        starts.append(max(0, len(x) - HALF))
    cuts = [x[s : s + HALF] for s in starts]
    raw = np.stack([np.resize(c, WINDOW) for c in cuts])
    return starts, raw, [speech_seconds(frame_levels(c)) for c in cuts]


def score(samples: Path, detector: Detector, out: Path) -> None:
    rng = np.random.default_rng(11)  # the seed of verdict_study.py splice: the same files and channels
    options = AudioOptions()
    with out.open("w") as fh:
        for f in splice_files(samples, rng):
            for channel in CHANNELS:
                audio, windows = prepare(through(channel, f["audio"], rng), options)
                starts, raw, speech = _half_windows(audio.waveform)
                batch, silent, _ = level_windows(raw, options)
                row = {
                    "kind": f["kind"],
                    "name": f["name"],
                    "channel": channel,
                    "fake_s": f["fake_s"],
                    "spans": windows.spans,
                    "silent": windows.silent,
                    "scores": detector.scores(windows.batch).tolist(),
                    "half_starts_s": [s / SAMPLE_RATE for s in starts],
                    "half_speech_s": speech,
                    "half_silent": silent,
                    "half_scores": detector.scores(batch).tolist(),
                }
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(f"{f['name']}: scored", file=sys.stderr)


def _half_fake(row: dict, offset: float, min_speech_s: float, run: int) -> bool:
    """``run`` consecutive counted half windows called fake at ``offset``; uncounted ones do not break
    a run."""
    length = 0
    for s, speech, quiet in zip(row["half_scores"], row["half_speech_s"], row["half_silent"], strict=True):
        if quiet or speech < min_speech_s:
            continue
        length = length + 1 if _called_fake(s, offset) else 0
        if length >= run:
            return True
    return False


def report(rows: list[dict], rule: Rule) -> str:
    """The service's ``rule`` alone, then with half windows added at several offsets and run lengths."""
    real = [r for r in rows if r["kind"] == "real"]
    spliced = [r for r in rows if r["kind"] == "spliced"]
    seconds = sorted({round(r["fake_s"][1] - r["fake_s"][0]) for r in spliced})

    def line(name: str, called) -> str:
        alarms = sum(map(called, real))
        caught = Counter(round(r["fake_s"][1] - r["fake_s"][0]) for r in spliced if called(r))
        total = Counter(round(r["fake_s"][1] - r["fake_s"][0]) for r in spliced)
        by_length = " | ".join(f"{caught[s]}/{total[s]}" for s in seconds)
        return f"| {name} | {alarms}/{len(real)} | {sum(caught.values())}/{len(spliced)} | {by_length} |"

    lines = [
        "| rule | real-only called FAKE | spliced called FAKE | "
        + " | ".join(f"{s} s" for s in seconds)
        + " |",
        "|---|---:|---:|" + "---:|" * len(seconds),
        line("service (4.04 s windows)", lambda r: bool(_segments(r, rule))),
    ]
    for min_speech in (1.5, 1.75):
        for run in (1, 2):
            for half_offset in (6, 7, 8, 9):
                name = f"+ half windows: {run} below -{half_offset}, >= {min_speech} s speech"
                lines.append(
                    line(
                        name,
                        lambda r, o=half_offset, m=min_speech, k=run: (
                            bool(_segments(r, rule)) or _half_fake(r, o, m, k)
                        ),
                    )
                )
    worst = sorted(
        (s, r["name"], r["channel"])
        for r in real
        for s, speech, quiet in zip(r["half_scores"], r["half_speech_s"], r["half_silent"], strict=True)
        if not quiet and speech >= 1.5
    )[:5]
    lows = ", ".join(f"{s:.1f} ({name}, {channel})" for s, name, channel in worst)
    lines += ["", f"lowest half-window margins of real-only recordings: {lows}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("score", "report"))
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    args = parser.parse_args()
    if args.step == "report":
        rows = [json.loads(line) for line in args.paths[0].read_text().splitlines() if line.strip()]
        print(report(rows, Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE)))
        return
    torch.set_num_threads(2)
    detector = Detector.load("aasist", checkpoint_dir=args.checkpoint_dir, engine="fast", device="cpu")
    score(args.paths[0], detector, args.paths[1])


if __name__ == "__main__":
    main()
