"""Train, dev and test lists for leave-one-family-out runs, from a corpus manifest.

A fold trains and is calibrated without its held-out families at all, then is tested on them (test
split, every channel copy) together with the held-out real speakers. A fold holding out nothing trains
on every family: the shipped model. Spliced files are test-only: their first window may be all real speech,
so they would mislabel training crops and the dev EER.
"""

from __future__ import annotations

from collections.abc import Sequence

from .build import BONAFIDE, Entry

TEST_ONLY = ("spliced",)


def fold_lists(entries: Sequence[Entry], held_out: Sequence[str]) -> dict[str, list[Entry]]:
    """``{"train", "dev", "test"}`` rows for the fold that holds out the ``held_out`` families (none:
    every family trains, and the test split of every family is tested)."""
    excluded = {*held_out, *TEST_ONLY}
    lists: dict[str, list[Entry]] = {
        split: [e for e in entries if e.split == split and e.family not in excluded]
        for split in ("train", "dev")
    }
    lists["test"] = [
        e
        for e in entries
        if e.split == "test" and (e.label == BONAFIDE or not held_out or e.family in held_out)
    ]
    return lists
