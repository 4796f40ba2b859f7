"""Train, dev and test lists for leave-one-family-out runs, written from a corpus manifest.

A fold named for a family trains and picks its threshold without that family at all, then is tested on it
(test split, every channel copy) together with the held-out real speakers. The ``all`` fold trains on every
family, for the shipped model. Spliced files are test-only: their first window may be all real speech,
so they would mislabel training crops and the dev EER.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from .build import BONAFIDE, Entry, read_manifest

LOFO_FAMILIES = ("piper", "kokoro", "copysynth", "espeak", "flite", "festival")
TEST_ONLY = ("spliced",)


def fold_lists(entries: Sequence[Entry], held_out: str | None) -> dict[str, list[Entry]]:
    """``{"train", "dev", "test"}`` rows for the fold that holds out ``held_out`` (None: nothing)."""
    excluded = {held_out, *TEST_ONLY}
    lists: dict[str, list[Entry]] = {
        split: [e for e in entries if e.split == split and e.family not in excluded]
        for split in ("train", "dev")
    }
    lists["test"] = [
        e
        for e in entries
        if e.split == "test" and (e.label == BONAFIDE or held_out is None or e.family == held_out)
    ]
    return lists


def write_fold(corpus: Path, out: Path, held_out: str | None) -> dict[str, Path]:
    """Write ``train.csv``, ``dev.csv`` and ``test.csv`` (path,label,attack,channel) for one fold."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in fold_lists(read_manifest(corpus), held_out).items():
        path = paths[split] = out / f"{split}.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "attack", "channel"])
            for e in rows:
                writer.writerow(
                    [
                        str((corpus / e.path).resolve()),
                        e.label,
                        e.family if e.label != BONAFIDE else "-",
                        e.channel,
                    ]
                )
    return paths
