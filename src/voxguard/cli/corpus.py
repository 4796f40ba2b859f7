"""``voxguard corpus``: build the labelled training corpus (docs/training.md)."""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter
from pathlib import Path

from ..settings import Settings
from .options import count, positive, subcommand


def add(sub: argparse._SubParsersAction, settings: Settings) -> argparse.ArgumentParser:
    c = subcommand(
        sub,
        "corpus",
        "build the labelled training corpus: local real speech, local synthesis, channel copies",
    )
    c.add_argument("--out", type=Path, required=True, help="corpus folder (manifest.csv; a rerun resumes)")
    c.add_argument(
        "--shared",
        type=Path,
        default=Path("../shared"),
        help="folder with corpus/ and samples/ (real speech)",
    )
    c.add_argument("--size", choices=("tiny", "full"), default="full", help="tiny: a few files of each kind")
    c.add_argument("--families", help="comma-separated families to make (default: all)")
    c.add_argument("--workers", type=positive, default=os.cpu_count() or 1, help="processes")
    c.add_argument("--seed", type=count, default=1234, help="seed for every random choice")
    return c


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..corpus.build import Sizes, build

    logging.getLogger("voxguard").setLevel(logging.INFO)
    families = [f.strip() for f in args.families.split(",")] if args.families else None
    entries = build(args.shared, args.out, Sizes.named(args.size), args.seed, args.workers, families)
    counts = Counter((e.split, e.label) for e in entries)
    print(
        f"{args.out / 'manifest.csv'}: {len(entries)} files; "
        + ", ".join(f"{s} {lab} {n}" for (s, lab), n in sorted(counts.items()))
    )
    return 0
