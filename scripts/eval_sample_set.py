"""Build the sample evaluation set behind `make eval-report`: the shared recordings plus espeak-ng speech.

    python scripts/eval_sample_set.py SAMPLES_DIR OUT_DIR

OUT_DIR gets the folder layout that `voxguard eval` reads:

    bonafide/*                          links to the 5 recordings in SAMPLES_DIR
    bonafide/derived/*                  links to their 25 transcoded copies
    spoof/espeak-ng-en-us/*.wav         espeak-ng, American English voice, 5 clips of two sentences
    spoof/espeak-ng-en-gb-f3/*.wav      espeak-ng, British English female variant, the same clips
    spoof/espeak-ng-en-us-quiet30dB/*   the en-us clips 30 dB quieter: the level attack on AASIST

The recordings are linked, not copied, so their licence notes stay with them. espeak-ng is a formant
synthesiser: an honest spoof class, but far easier to detect than modern neural voice cloning.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

# Harvard sentences (IEEE 1969), the usual phonetically balanced test sentences.
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
)
VOICES = {"espeak-ng-en-us": "en-us", "espeak-ng-en-gb-f3": "en-gb+f3"}
QUIET_DB = 30
AUDIO = (".flac", ".mp3", ".wav", ".ogg")


def build(samples: Path, out: Path) -> int:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is needed: apt-get install espeak-ng")
    if out.exists():
        raise SystemExit(f"{out} exists; remove it first")
    count = 0
    for source, target in ((samples, out / "bonafide"), (samples / "derived", out / "bonafide" / "derived")):
        target.mkdir(parents=True)
        for path in sorted(p for p in source.iterdir() if p.suffix in AUDIO):
            (target / path.name).symlink_to(path.resolve())
            count += 1
    for attack, voice in VOICES.items():
        folder = out / "spoof" / attack
        folder.mkdir(parents=True)
        for i, text in enumerate(SENTENCES, start=1):
            # Two sentences a clip: one espeak-ng sentence is under the service's 2 s speech floor.
            pair = f"{text} {SENTENCES[i % len(SENTENCES)]}"
            wav = folder / f"harvard_{i:02d}.wav"
            subprocess.run([espeak, "-v", voice, "-w", str(wav), pair], check=True)
            count += 1
    quiet = out / "spoof" / f"espeak-ng-en-us-quiet{QUIET_DB}dB"
    quiet.mkdir(parents=True)
    for path in sorted((out / "spoof" / "espeak-ng-en-us").glob("*.wav")):
        audio, rate = sf.read(path, dtype="float32")
        sf.write(quiet / path.name, audio * np.float32(10 ** (-QUIET_DB / 20)), rate, subtype="FLOAT")
        count += 1
    return count


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    total = build(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{sys.argv[2]}: {total} files")
