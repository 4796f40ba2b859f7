"""The measurements behind voxguard's verdict rules (docs/evaluation.md: short audio, partly synthetic).

    python scripts/verdict_study.py short  SAMPLES_DIR OUT.json [--model aasist]
    python scripts/verdict_study.py splice SAMPLES_DIR OUT.json [--model aasist]
    python scripts/verdict_study.py report SHORT.json SPLICE.json

``short`` cuts the real recordings (SAMPLES_DIR and its ``derived/`` transcodes) and synthetic speech to
0.25-3.5 s at the start, middle and end of each clip, pads every cut with each strategy in
``voxguard.audio.PADDINGS`` and scores it. ``splice`` builds long real-only recordings from the real
recordings and, from the same recordings, spliced ones with one synthetic utterance of 2-6 s inserted at
the start, middle or end, sends every file through a channel (clean, telephone, noise at 30 dB SNR,
Ogg/Vorbis, Ogg/Opus) and keeps every window's score exactly as the service computes it. ``report`` prints
the tables docs/evaluation.md quotes: error rates by length and strategy, and the detection and false-alarm
rate of the file rule for several window thresholds and run lengths.

Synthetic speech comes from the local synthesisers that are installed: espeak-ng (formant), flite (diphone
and statistical parametric voices) and festival (diphone). All are far easier to detect than modern neural
voice cloning; they are what can be made offline here.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from voxguard.audio.decoding import decode
from voxguard.audio.options import SAMPLE_RATE, WINDOW, AudioOptions
from voxguard.audio.speech import SPEECH_FRAME, SPEECH_MIN_FRAMES, frame_levels, speech_seconds, speech_span
from voxguard.audio.windows import level_windows, prepare
from voxguard.inference import Detector
from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE
from voxguard.scoring import Rule, fake_probability, find_segments
from voxguard.settings import Settings
from voxguard.training.augment import add_noise, encode, telephone

SENTENCES = (
    "Please call Stella and ask her to bring these things with her from the store.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Your account has been locked, please confirm your identity by reading the code aloud.",
    "I will be home late tonight, so do not wait for me before dinner.",
    "Transfer the money to the new account before the end of the day.",
)
# (synthesiser, voice) pairs; each is used only where its program is installed.
VOICES = (
    ("espeak-ng", "en"),
    ("espeak-ng", "en-us+f3"),
    ("espeak-ng", "en-gb-x-rp+m2"),
    ("flite", "kal16"),
    ("flite", "awb"),
    ("flite", "rms"),
    ("flite", "slt"),
    ("festival", "kal_diphone"),
)
LENGTHS_S = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5)
INSERT_S = (2.0, 3.0, 4.0, 5.0, 6.0)
POSITIONS = ("start", "middle", "end")
CHANNELS = ("clean", "telephone", "noise30", "vorbis", "opus24k")
ORIGINALS = ("p225_001_mic1.flac", "p225_001_mic2.flac", "p225_002_mic1.flac", "p225_002_mic2.flac")
MEMO = "voicememo.mp3"


def synthesise(synth: str, voice: str, text: str, folder: Path) -> np.ndarray | None:
    """16 kHz mono speech from a local synthesiser, or None where it is not installed."""
    program = shutil.which({"festival": "text2wave"}.get(synth, synth))
    if program is None:
        return None
    wav = folder / "tts.wav"
    if synth == "espeak-ng":
        subprocess.run([program, "-v", voice, "-w", str(wav), text], check=True)
    elif synth == "flite":
        subprocess.run([program, "-voice", voice, "-t", text, "-o", str(wav)], check=True)
    else:
        script = folder / "text.txt"
        script.write_text(text)
        subprocess.run([program, "-o", str(wav), str(script)], check=True, capture_output=True)
    return decode(wav.read_bytes()).waveform


def synthetic_set() -> list[tuple[str, np.ndarray]]:
    """Every installed voice speaking every sentence: (name, 16 kHz waveform)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for synth, voice in VOICES:
            for i, text in enumerate(SENTENCES):
                audio = synthesise(synth, voice, text, Path(tmp))
                if audio is None:
                    break
                out.append((f"{synth}-{voice}-{i}", audio))
    voices = sorted({name.rsplit("-", 1)[0] for name, _ in out})
    print(f"synthetic speech: {len(out)} clips from {', '.join(voices)}", file=sys.stderr)
    return out


def real_set(samples: Path) -> list[tuple[str, np.ndarray]]:
    paths = sorted(p for p in samples.iterdir() if p.is_file() and p.suffix in (".flac", ".mp3"))
    paths += sorted((samples / "derived").iterdir())
    return [(p.name, decode(p.read_bytes()).waveform) for p in paths]


def _repeat(x: np.ndarray) -> np.ndarray:
    return np.tile(x, WINDOW // len(x) + 1)[:WINDOW]


def _zero(x: np.ndarray) -> np.ndarray:
    return np.pad(x, (0, WINDOW - len(x)))


def _mirror(x: np.ndarray) -> np.ndarray:
    return _repeat(np.concatenate([x, x[::-1]]))


def _trim_repeat(x: np.ndarray) -> np.ndarray:
    start, end = speech_span(x)
    return _repeat(x[start:end] if end - start >= SPEECH_FRAME * SPEECH_MIN_FRAMES else x)


def _crossfade(x: np.ndarray, fade: int = 320) -> np.ndarray:
    """Repeat with a 20 ms crossfade at every join, so no join clicks."""
    k = min(fade, len(x) // 4)
    ramp = np.linspace(0.0, 1.0, k, dtype=np.float32)
    out = np.array(x, dtype=np.float32)
    while len(out) < WINDOW:
        joined = out[len(out) - k :] * (1 - ramp) + x[:k] * ramp
        out = np.concatenate([out[: len(out) - k], joined, x[k:]])
    return out[:WINDOW]


# Ways to fill the model's 4.04 s window with shorter audio; "repeat" is the reference evaluation's.
PADDINGS = {
    "repeat": _repeat,
    "zero": _zero,
    "mirror": _mirror,
    "trim-repeat": _trim_repeat,
    "crossfade": _crossfade,
}


def study_short(samples: Path, detector: Detector, out: Path) -> None:
    """Every cut of every clip, filled by every strategy and scored; one JSON line per cut in ``out``."""
    options = AudioOptions()
    with out.open("w") as fh:
        for label, clips in (("bonafide", real_set(samples)), ("spoof", synthetic_set()[::3])):
            for name, audio in clips:
                for length in LENGTHS_S:
                    n = round(length * SAMPLE_RATE)
                    if n > len(audio):
                        continue
                    for offset in sorted({0, (len(audio) - n) // 2, len(audio) - n}):
                        cut = audio[offset : offset + n]
                        raw = np.stack([fill(cut) for fill in PADDINGS.values()])
                        batch, _, _ = level_windows(raw, options)
                        scores = detector.scores(batch)
                        row = {
                            "label": label,
                            "clip": name,
                            "length_s": length,
                            "offset_s": offset / SAMPLE_RATE,
                            "speech_s": speech_seconds(frame_levels(cut)),
                            "scores": dict(zip(PADDINGS, map(float, scores), strict=True)),
                        }
                        fh.write(json.dumps(row) + "\n")
                fh.flush()
                print(f"{label} {name}: done", file=sys.stderr)


def _level(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def real_recordings(samples: Path, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Long real-only recordings: the shared recordings end to end in eight different orders, 12-20 s."""
    clips = {name: decode((samples / name).read_bytes()).waveform for name in (*ORIGINALS, MEMO)}
    names = list(clips)
    out = []
    for i in range(8):
        order: list[str] = []
        while sum(len(clips[n]) for n in order) < rng.uniform(12.0, 20.0) * SAMPLE_RATE:
            order.append(names[int(rng.integers(len(names)))])
        out.append((f"real{i}", np.concatenate([clips[n] for n in order])))
    return out


def _insert(base: np.ndarray, fake: np.ndarray, position: str) -> tuple[np.ndarray, int]:
    """``fake`` spliced into ``base`` at a join between its utterances nearest the chosen place."""
    at = {"start": 0, "middle": len(base) // 2, "end": len(base)}[position]
    return np.concatenate([base[:at], fake, base[at:]]), at


def _synthetic_stretch(voice: list[np.ndarray], seconds: float, options: AudioOptions) -> np.ndarray:
    """``seconds`` of one voice's speech: its sentences, silences trimmed, end to end, cut to length."""
    parts = []
    for audio in voice:
        start, end = speech_span(audio)
        parts.append(audio[start:end])
    stretch = np.concatenate(parts * 2)
    return stretch[: round(seconds * SAMPLE_RATE)]


def through(channel: str, audio: np.ndarray, rng: np.random.Generator) -> bytes:
    """The file a service would receive after ``channel``."""
    if channel == "telephone":
        narrow = telephone(audio, rng)
        buffer = io.BytesIO()
        sf.write(buffer, narrow[::2], SAMPLE_RATE // 2, format="WAV", subtype="PCM_16")
        return buffer.getvalue()
    if channel == "noise30":
        audio = add_noise(audio, rng, 30.0, 30.0)
    if channel == "opus24k":
        return encode(audio, "libopus", "ogg", 24_000)
    buffer = io.BytesIO()
    container, subtype = ("OGG", "VORBIS") if channel == "vorbis" else ("FLAC", "PCM_16")
    sf.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format=container, subtype=subtype)
    return buffer.getvalue()


def splice_files(samples: Path, rng: np.random.Generator) -> list[dict]:
    """The real-only recordings and, from each, six with a synthetic stretch inserted (before channels)."""
    options = AudioOptions()
    bases = real_recordings(samples, rng)
    synthetic = synthetic_set()
    voices: dict[str, list[np.ndarray]] = defaultdict(list)
    for name, audio in synthetic:
        voices[name.rsplit("-", 1)[0]].append(audio)
    voice_names = sorted(voices)
    files: list[dict] = []
    for b, (base_name, base) in enumerate(bases):
        files.append({"kind": "real", "name": base_name, "audio": base, "fake_s": None})
        for p, position in enumerate(POSITIONS):
            for k in range(2):
                seconds = INSERT_S[(b + p + 2 * k) % len(INSERT_S)]
                voice = voice_names[(3 * b + p + 5 * k) % len(voice_names)]
                fake = _synthetic_stretch(voices[voice], seconds, options)
                speech = base[slice(*speech_span(base))]
                fake = fake * np.float32(_level(speech) / max(_level(fake), 1e-9))
                audio, at = _insert(base, fake, position)
                files.append(
                    {
                        "kind": "spliced",
                        "name": f"{base_name}-{position}-{voice}-{seconds:g}s",
                        "audio": audio,
                        "fake_s": [at / SAMPLE_RATE, (at + len(fake)) / SAMPLE_RATE],
                    }
                )
    return files


def study_splice(samples: Path, detector: Detector, out: Path) -> None:
    """Real-only and spliced recordings through every channel, scored window by window; one JSON line
    per file and channel in ``out``."""
    rng = np.random.default_rng(11)
    options = AudioOptions()
    files = splice_files(samples, rng)
    with out.open("w") as fh:
        for f in files:
            for channel in CHANNELS:
                audio, windows = prepare(through(channel, f["audio"], rng), options)
                row = {
                    "kind": f["kind"],
                    "name": f["name"],
                    "channel": channel,
                    "duration_s": audio.info.duration_s,
                    "fake_s": f["fake_s"],
                    "spans": windows.spans,
                    "silent": windows.silent,
                    "scores": [float(s) for s in detector.scores(windows.batch)],
                }
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(f"{f['name']}: scored in {len(CHANNELS)} channels", file=sys.stderr)


SPEECH_BINS_S = (0.0, 0.5, 1.0, 1.5, 1.75, 2.0, 2.5, 4.5)
OFFSETS = (0.0, 3.0, 4.0, 5.0, 6.0, 7.0)


def _called_fake(score: float, offset: float) -> bool:
    return fake_probability(score + offset) >= 0.5


def _errors(rows: list[dict], strategy: str, offset: float) -> str:
    """``real called FAKE / synthetic called REAL`` over ``rows``."""
    real = [r for r in rows if r["label"] == "bonafide"]
    fake = [r for r in rows if r["label"] == "spoof"]
    fa = sum(_called_fake(r["scores"][strategy], offset) for r in real)
    miss = sum(not _called_fake(r["scores"][strategy], offset) for r in fake)
    return f"{fa}/{len(real)} · {miss}/{len(fake)}"


def short_tables(rows: list[dict], offset: float) -> str:
    """Errors by seconds of speech in the cut: per padding strategy at ``offset``, then for ``repeat``
    per offset, then cumulatively (every cut with at least that much speech), which sets the floor."""
    bins = list(itertools.pairwise(SPEECH_BINS_S))
    head = "| speech in the cut | " + " | ".join(PADDINGS) + " |"
    lines = [f"Padding strategies at offset {offset:g} (real called FAKE · synthetic called REAL):", "", head]
    lines.append("|---|" + "---:|" * len(PADDINGS))
    for lo, hi in bins:
        at = [r for r in rows if lo <= r["speech_s"] < hi]
        lines.append(f"| {lo:g}-{hi:g} s | " + " | ".join(_errors(at, s, offset) for s in PADDINGS) + " |")
    lines += [
        "",
        "`repeat` by offset:",
        "",
        "| speech in the cut | " + " | ".join(f"{o:g}" for o in OFFSETS) + " |",
    ]
    lines.append("|---|" + "---:|" * len(OFFSETS))
    for lo, hi in bins:
        at = [r for r in rows if lo <= r["speech_s"] < hi]
        lines.append(f"| {lo:g}-{hi:g} s | " + " | ".join(_errors(at, "repeat", o) for o in OFFSETS) + " |")
    lines += ["", f"`repeat` at offset {offset:g}, every cut with at least this much speech:", ""]
    lines += [
        "| at least | real called FAKE · synthetic called REAL | lowest real score | highest synthetic |"
    ]
    lines.append("|---:|---:|---:|---:|")
    for floor in (1.0, 1.5, 1.75, 1.8, 1.9, 2.0, 2.25, 2.5):
        at = [r for r in rows if r["speech_s"] >= floor]
        real = [r["scores"]["repeat"] + offset for r in at if r["label"] == "bonafide"]
        fake = [r["scores"]["repeat"] + offset for r in at if r["label"] == "spoof"]
        lines.append(f"| {floor:g} s | {_errors(at, 'repeat', offset)} | {min(real):.2f} | {max(fake):.2f} |")
    return "\n".join(lines)


def _segments(row: dict, rule: Rule) -> list:
    spans = [tuple(s) for s in row["spans"]]
    return find_segments(spans, np.asarray(row["scores"]), row["silent"], rule)


def _mean_rule(row: dict) -> bool:
    counted = [s for s, silent in zip(row["scores"], row["silent"], strict=True) if not silent]
    return fake_probability(float(np.mean(counted))) >= 0.5


def _rates(rows: list[dict], called: Callable[[dict], bool]) -> str:
    n = sum(called(r) for r in rows)
    return f"{n}/{len(rows)} ({n / len(rows):.0%})" if rows else "-"


def splice_tables(rows: list[dict], rule: Rule) -> str:
    """Detection and false alarms of the file rule by offset and run length, then the chosen ``rule``
    by channel and by inserted length, with how much of each splice its segments cover."""
    spliced = [r for r in rows if r["kind"] == "spliced"]
    real = [r for r in rows if r["kind"] == "real"]
    lines = ["| rule | spliced called FAKE | real-only called FAKE |", "|---|---:|---:|"]
    lines.append(
        f"| mean of the windows (before) | {_rates(spliced, _mean_rule)} | {_rates(real, _mean_rule)} |"
    )
    for offset in OFFSETS:
        for k in (1, 2, 3):
            r = Rule(offset=offset, min_windows=k)
            hit = lambda row, r=r: bool(_segments(row, r))  # noqa: E731
            lines.append(
                f"| offset {offset:g}, {k} window(s) | {_rates(spliced, hit)} | {_rates(real, hit)} |"
            )
    chosen = lambda row: bool(_segments(row, rule))  # noqa: E731
    lines += ["", f"Offset {rule.offset:g}, {rule.min_windows} window(s), by channel:", ""]
    lines += ["| channel | spliced called FAKE | real-only called FAKE |", "|---|---:|---:|"]
    for channel in CHANNELS:
        at = [r for r in rows if r["channel"] == channel]
        lines.append(
            f"| {channel} | {_rates([r for r in at if r['kind'] == 'spliced'], chosen)} | "
            f"{_rates([r for r in at if r['kind'] == 'real'], chosen)} |"
        )
    lines += ["", "| inserted | spliced called FAKE |", "|---:|---:|"]
    for seconds in INSERT_S:
        at = [r for r in spliced if abs(r["fake_s"][1] - r["fake_s"][0] - seconds) < 0.01]
        lines.append(f"| {seconds:g} s | {_rates(at, chosen)} |")
    covered, precise, located = [], [], 0
    for row in spliced:
        segments = _segments(row, rule)
        if not segments:
            continue
        lo, hi = row["fake_s"]
        inside = sum(max(0.0, min(hi, s.end_s) - max(lo, s.start_s)) for s in segments)
        located += inside > 0
        covered.append(inside / (hi - lo))
        precise.append(inside / sum(s.end_s - s.start_s for s in segments))
    lines += [
        "",
        f"Of the {len(covered)} spliced files called FAKE, {located} have a segment over the splice; the "
        f"segments cover {np.mean(covered):.0%} of the synthetic stretch on average, and "
        f"{np.mean(precise):.0%} of what they span is synthetic.",
    ]
    return "\n".join(lines)


def report(short: list[dict], splice: list[dict], rule: Rule) -> str:
    return "\n\n".join(
        ["## Short audio", short_tables(short, rule.offset), "## Spliced", splice_tables(splice, rule)]
    )


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study", choices=("short", "splice", "report"))
    parser.add_argument("inputs", nargs=2, type=Path)
    parser.add_argument("--model", default="aasist")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    args = parser.parse_args()
    if args.study == "report":
        short, splice = (_read_rows(p) for p in args.inputs)
        print(report(short, splice, Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE)))
        return
    torch.set_num_threads(1)  # one study per core: threads fighting over two cores cost more than they give
    detector = Detector.load(args.model, checkpoint_dir=args.checkpoint_dir, engine="fast", device="cpu")
    samples, out = args.inputs
    study = study_short if args.study == "short" else study_splice
    study(samples, detector, out)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
