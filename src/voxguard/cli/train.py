"""``voxguard train``: train or fine-tune AASIST with the official recipe (docs/training.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..model.config import ARCHITECTURES
from ..model.locate import REGISTRY
from ..settings import Settings
from ..training.recipe import Recipe
from .options import count, picked, positive, setting_flag, subcommand

if TYPE_CHECKING:
    from ..training.trainer import RunSummary, Runtime


def _probability(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {value!r}")
    return number


def _class_weights(value: str) -> tuple[float, float]:
    try:
        spoof, bonafide = (float(v) for v in value.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected SPOOF,BONAFIDE weights such as 0.1,0.9, got {value!r}"
        ) from exc
    if min(spoof, bonafide) <= 0:
        raise argparse.ArgumentTypeError(f"class weights must be positive, got {value!r}")
    return spoof, bonafide


def add(sub: argparse._SubParsersAction, settings: Settings) -> argparse.ArgumentParser:
    t = subcommand(sub, "train", "train or fine-tune AASIST (official recipe); see docs/training.md")
    t.add_argument("--train", type=Path, required=True, help="ASVspoof protocol, path,label CSV or folder")
    t.add_argument("--train-audio-dir", type=Path, help="audio folder of an ASVspoof protocol")
    t.add_argument("--dev", type=Path, required=True, help="dev set (any layout): EER every epoch")
    t.add_argument("--dev-audio-dir", type=Path, help="audio folder of an ASVspoof dev protocol")
    t.add_argument("--out", type=Path, required=True, help="run folder: best.pt, last.pt, metrics.jsonl, ...")
    _recipe_options(t)
    _runtime_options(t, settings)
    return t


def _recipe_options(t: argparse.ArgumentParser) -> None:
    """What the run trains: the recipe, which a resumed run must repeat."""
    t.add_argument("--model", choices=tuple(ARCHITECTURES), help="architecture (default aasist, or --init's)")
    t.add_argument("--init", help="fine-tune from aasist | aasist-l (official weights) | a checkpoint PATH")
    t.add_argument("--name", help="model name the checkpoints record (default MODEL-OUTNAME)")
    t.add_argument("--epochs", type=positive, default=Recipe.epochs, help="passes over the training set")
    t.add_argument("--batch-size", type=positive, default=Recipe.batch_size, help="clips per step")
    t.add_argument("--lr", type=float, default=Recipe.lr, help="peak learning rate (cosine to --lr-min)")
    t.add_argument("--lr-min", type=float, default=Recipe.lr_min, help="learning rate at the last step")
    t.add_argument("--weight-decay", type=float, default=Recipe.weight_decay, help="Adam weight decay")
    t.add_argument("--seed", type=count, default=Recipe.seed, help="seed for weights, order and augmentation")
    t.add_argument(
        "--class-weights",
        type=_class_weights,
        default=(Recipe.spoof_weight, Recipe.bonafide_weight),
        help="loss weights SPOOF,BONAFIDE (for ASVspoof's ~9:1 spoof:bona fide)",
    )
    t.add_argument(
        "--augment", default="", help="comma-separated: gain,noise,telephone,codec,speed (empty: none)"
    )
    t.add_argument(
        "--augment-prob",
        type=_probability,
        default=Recipe.augment_probability,
        help="chance of each augmentation per crop",
    )
    t.add_argument(
        "--swa",
        action=argparse.BooleanOptionalAction,
        default=Recipe.swa,
        help="at the end, average the weights of the epochs that improved the dev result into swa.pt",
    )


def _runtime_options(t: argparse.ArgumentParser, settings: Settings) -> None:
    """How this invocation runs; these may change when a run is resumed."""
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.add_argument("--stop-after", type=positive, help="stop (resumably) after this many epochs")
    setting_flag(t, settings, "device")
    t.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="autocast precision; auto = bf16 on CUDA, fp32 on CPU",
    )
    t.add_argument("--workers", type=count, help="DataLoader processes (default: 0 on CPU, 8 on CUDA)")
    t.add_argument(
        "--cache", choices=("memory", "none"), default="memory", help="decode each file once into memory"
    )
    t.add_argument("--eval-batch-size", type=positive, default=32, help="clips per dev forward")
    setting_flag(t, settings, "threads")
    setting_flag(t, settings, "checkpoint_dir")
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=sys.stderr.isatty(),
        help="progress bars (on when stderr is a terminal; the log has a line per epoch either way)",
    )


def _recipe(args: argparse.Namespace) -> Recipe:
    from ..training.augment import parse_augmentations

    absolute = {
        k: str(getattr(args, k).resolve()) if getattr(args, k) else None
        for k in ("train", "train_audio_dir", "dev", "dev_audio_dir")
    }
    init = args.init if args.init is None or args.init in REGISTRY else str(Path(args.init).resolve())
    return Recipe(
        **absolute,
        **picked(
            args, "model", "name", "epochs", "batch_size", "lr", "lr_min", "weight_decay", "seed", "swa"
        ),
        init=init,
        spoof_weight=args.class_weights[0],
        bonafide_weight=args.class_weights[1],
        augment=parse_augmentations(args.augment),
        augment_probability=args.augment_prob,
    )


def _runtime(args: argparse.Namespace) -> Runtime:
    from dataclasses import fields

    from ..training.trainer import Runtime

    return Runtime(**picked(args, *(field.name for field in fields(Runtime))))  # every field is a flag


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..datasets import DatasetError
    from ..training import TrainingError
    from ..training.trainer import train

    logging.getLogger("voxguard").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        recipe, runtime = _recipe(args), _runtime(args)
    except ValueError as exc:  # an invalid recipe or runtime value, named in the message
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
    try:
        summary = train(recipe, runtime)
    except (TrainingError, DatasetError) as exc:
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
    _print_summary(args, summary)
    return 0


def _print_summary(args: argparse.Namespace, summary: RunSummary) -> None:
    best = summary.best
    print(
        f"best: {args.out / 'best.pt'} (epoch {best.epoch}, dev EER {best.dev_eer:.2%}, sha256 {best.sha256})"
    )
    state = "complete" if summary.complete else "stopped; add --resume to continue"
    done = f"epoch {summary.epochs_done}/{args.epochs}"
    print(f"last: {args.out / 'last.pt'} ({done}, {state}, sha256 {summary.last_sha256})")
    if summary.swa is not None:
        swa = summary.swa
        print(
            f"swa: {args.out / 'swa.pt'} (average of epochs {', '.join(map(str, swa.epochs))}, "
            f"dev EER {swa.dev_eer:.2%}, sha256 {swa.sha256})"
        )
    print(f"serve it: voxguard serve --checkpoint {args.out / 'best.pt'}")
