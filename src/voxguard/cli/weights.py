"""``voxguard weights``: download the official checkpoints, sha256-verified."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model.config import VARIANTS
from ..settings import Settings
from .options import subcommand


def add(sub: argparse._SubParsersAction, settings: Settings) -> argparse.ArgumentParser:
    w = subcommand(sub, "weights", "download the pretrained checkpoints (sha256-verified)")
    w.add_argument("--model", default="all", choices=(*VARIANTS, "all"), help="which checkpoint")
    w.add_argument(
        "--dir",
        type=Path,
        default=settings.checkpoint_dir,
        help="where to put them (VOXGUARD_CHECKPOINT_DIR); unset: where a copy is found, else the "
        "repository's checkpoints/ (./checkpoints outside a repository)",
    )
    w.add_argument("--url", help="download from this URL instead (one model; file:// works)")
    w.add_argument("--force", action="store_true", help="download even when a verified copy exists")
    return w


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..model.checkpoints import fetch
    from ..model.locate import REGISTRY, CheckpointError, download_dir, find_dir

    # The shipped models (SpecNet) come with the package: only the official weights are downloaded.
    names = [n for n, spec in REGISTRY.items() if not spec.bundled] if args.model == "all" else [args.model]
    if args.url and len(names) != 1:
        raise CheckpointError(
            "usage", "--url needs exactly one --model", "add --model aasist or --model aasist-l"
        )
    for name in names:
        # Without --dir, a copy the lookup already finds is checked in place rather than fetched again.
        path = fetch(name, args.dir or find_dir(name) or download_dir(), url=args.url, force=args.force)
        print(f"{name}: {path} (sha256 verified)")
    return 0
