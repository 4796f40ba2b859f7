"""The ``voxguard`` command: predict, weights, bench, eval, train (and serve, from the service module)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from pydantic import ValidationError

from .datasets import AUDIO_SUFFIXES
from .model.config import ARCHITECTURES, VARIANTS
from .model.locate import REGISTRY
from .settings import Settings, settings_from_environment
from .setup_errors import SetupError
from .training.recipe import Recipe

if TYPE_CHECKING:  # torch comes with these: commands import them when they run, so --help stays fast
    from .inference import Detector

logger = logging.getLogger("voxguard")

# Every option shows its default in --help.
_HELP = argparse.ArgumentDefaultsHelpFormatter
ENGINES: tuple[str, ...] = get_args(Settings.model_fields["engine"].annotation)
# The engines that run a model; "simulated" stands in for an accelerator and only makes sense where a
# server is measured (serve, bench serve).
MODEL_ENGINES = tuple(e for e in ENGINES if e != "simulated")
PREPROCESS: tuple[str, ...] = get_args(Settings.model_fields["preprocess"].annotation)


def _setting(name: str) -> Callable[[str], object]:
    """An argparse ``type`` that validates a flag exactly as the ``Settings`` field ``name`` validates its
    ``VOXGUARD_*`` variable (field validators included: lists split on commas), so ``--threshold 1.5``
    and ``VOXGUARD_THRESHOLD=1.5`` are refused alike."""

    def parse(text: str) -> object:
        probe = Settings.model_construct()
        try:
            Settings.__pydantic_validator__.validate_assignment(probe, name, text)
        except ValidationError as exc:
            reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise argparse.ArgumentTypeError(f"{text!r} is not valid: {reason}") from None
        return getattr(probe, name)

    parse.__name__ = name  # argparse names the type in its messages
    return parse


_SECRET_SETTINGS = frozenset({"api_keys"})


def _as_text(value: object) -> object:
    """A setting's value as its variable would spell it (lists with commas), for --help and re-parsing."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


def _settings_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """Every setting as a flag: ``--request-timeout-s`` for ``VOXGUARD_REQUEST_TIMEOUT_S``, with the same
    validation, the field's description as help and the current value (variable or default) as default.
    Settings are declared once, in ``Settings``; a new field is a new flag without touching this file."""
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} (VOXGUARD_{name.upper()})".replace("%", "%%")
        default = getattr(settings, name)
        if name in _SECRET_SETTINGS:  # never printed by --help; prefer the variable (ps shows flags)
            parser.add_argument(flag, type=_setting(name), default=argparse.SUPPRESS, help=help_text)
        elif field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=_setting(name), default=_as_text(default), help=help_text)


def _csv_ints(value: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from exc
    if not items or min(items) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return items


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {value!r}")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


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


_MODEL_HELP = f"model to use: {' | '.join(REGISTRY)} (VOXGUARD_MODELS: its first)"
_CHECKPOINT_DIR_HELP = (
    "folder holding the official weights (VOXGUARD_CHECKPOINT_DIR); unset: checkpoints/ here, then the "
    "repository's checkpoints/ and ../shared/aasist beside it"
)
_DEVICE_HELP = "auto | cpu | cuda | cuda:N; auto picks CUDA where present (VOXGUARD_DEVICE)"
_THREADS_HELP = "torch threads; 0 = all cores (VOXGUARD_THREADS)"
_BATCH_HELP = "windows per forward; 0 = 16 on CPU, 64 on CUDA (VOXGUARD_MAX_BATCH_SIZE)"
_WAIT_HELP = "how long a batch waits for more windows after its first, ms (VOXGUARD_MAX_WAIT_MS)"


def _model_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument("--model", default=settings.models[0], help=_MODEL_HELP)
    parser.add_argument(
        "--checkpoint", default=settings.checkpoint, help="explicit checkpoint file (VOXGUARD_CHECKPOINT)"
    )
    parser.add_argument(
        "--checkpoint-dir", default=settings.checkpoint_dir, type=Path, help=_CHECKPOINT_DIR_HELP
    )
    parser.add_argument("--device", default=settings.device, type=_setting("device"), help=_DEVICE_HELP)
    parser.add_argument("--threads", type=_setting("threads"), default=settings.threads, help=_THREADS_HELP)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=settings.compile,
        help="run the fast and bf16 engines through torch.compile (VOXGUARD_COMPILE)",
    )
    _cuda_graphs_option(parser, settings)


def _cuda_graphs_option(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=settings.cuda_graphs,
        help="on CUDA, replay the forward as a captured graph per batch size (VOXGUARD_CUDA_GRAPHS)",
    )


def _engine_option(parser: argparse.ArgumentParser, default: str, *, simulated: bool = False) -> None:
    help_text = "eager: the model as written; fast: the same numbers, faster; bf16: bfloat16 encoder"
    if simulated:
        help_text += "; simulated: a stand-in accelerator for benchmarks (VOXGUARD_SIMULATED_MS)"
    parser.add_argument(
        "--engine",
        choices=ENGINES if simulated else MODEL_ENGINES,
        type=_setting("engine"),
        default=default if simulated or default != "simulated" else "fast",
        help=f"{help_text} (VOXGUARD_ENGINE)",
    )


def _served_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """What ``bench serve`` and ``bench replicas`` start servers with, and how they load them."""
    parser.add_argument("--model", default=settings.models[0], help=_MODEL_HELP)
    parser.add_argument(
        "--checkpoint-dir", default=settings.checkpoint_dir, type=Path, help=_CHECKPOINT_DIR_HELP
    )
    parser.add_argument("--device", type=_setting("device"), default=settings.device, help=_DEVICE_HELP)
    _engine_option(parser, settings.engine, simulated=True)
    parser.add_argument(
        "--simulated-ms",
        type=_setting("simulated_ms"),
        default=_as_text(settings.simulated_ms),
        help="simulated engine: a forward of n windows takes A + B x bucket(n) ms (VOXGUARD_SIMULATED_MS)",
    )
    _cuda_graphs_option(parser, settings)
    parser.add_argument(
        "--max-batch-size", type=_setting("max_batch_size"), default=settings.max_batch_size, help=_BATCH_HELP
    )
    parser.add_argument(
        "--max-wait-ms", type=_setting("max_wait_ms"), default=settings.max_wait_ms, help=_WAIT_HELP
    )
    parser.add_argument("--connections", type=_positive, default=64, help="wrk connections, all together")
    parser.add_argument("--duration", type=_positive, default=15, help="seconds of load per measurement")
    parser.add_argument("--body", choices=("wav", "flac"), default="wav", help="the upload: 4.04 s at 16 kHz")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _preprocess_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        type=_setting("preprocess"),
        default=default,
        help="robust: every window at the same loudness; reference: the official input (VOXGUARD_PREPROCESS)",
    )


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxguard", description="Voice-deepfake detection with AASIST.", formatter_class=_HELP
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="score audio files: REAL or FAKE", formatter_class=_HELP)
    p.add_argument(
        "files",
        nargs="+",
        type=Path,
        help=f"audio files or folders (their {', '.join(AUDIO_SUFFIXES)} files)",
    )
    _model_options(p, settings)
    _engine_option(p, settings.engine)
    _preprocess_option(p, settings.preprocess)
    p.add_argument(
        "--threshold",
        type=_setting("threshold"),
        default=settings.threshold,
        help="FAKE when the fake probability is at or above this, 0 to 1 (VOXGUARD_THRESHOLD)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line per file")

    s = sub.add_parser(
        "serve",
        help="run the HTTP service; every setting is a flag here or a VOXGUARD_* variable",
        formatter_class=_HELP,
    )
    _settings_options(s, settings)

    w = sub.add_parser(
        "weights", help="download the pretrained checkpoints (sha256-verified)", formatter_class=_HELP
    )
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

    c = sub.add_parser(
        "corpus",
        help="build the labelled training corpus: local real speech, local synthesis, channel copies",
        formatter_class=_HELP,
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
    c.add_argument("--workers", type=_positive, default=os.cpu_count() or 1, help="processes")
    c.add_argument("--seed", type=_count, default=1234, help="seed for every random choice")

    b = sub.add_parser("bench", help="benchmarks", formatter_class=_HELP)
    bsub = b.add_subparsers(dest="bench", required=True)
    bm = bsub.add_parser("model", help="time the inference engines against each other", formatter_class=_HELP)
    _model_options(bm, settings)
    bm.add_argument("--engines", default=",".join(MODEL_ENGINES), help="comma-separated engines to time")
    bm.add_argument("--batch-sizes", type=_csv_ints, default=[1, 16], help="comma-separated batch sizes")
    bm.add_argument("--repeat", type=_positive, default=3, help="timed runs per engine and batch size")
    bm.add_argument(
        "--allocator",
        choices=("tuned", "system"),
        default="tuned" if settings.allocator_tuning else "system",
        help="glibc heap tuning (tuned) or the system default (VOXGUARD_ALLOCATOR_TUNING)",
    )
    bm.add_argument("--json", action="store_true", help="print the report as JSON")
    bs = bsub.add_parser(
        "serve",
        help="voxguard serve under a native load generator (wrk), against the framework floor",
        formatter_class=_HELP,
    )
    _served_options(bs, settings)
    bs.add_argument(
        "--frontends",
        type=_csv_ints,
        default=[1, 2],
        help="comma-separated front-end counts to measure voxguard with (VOXGUARD_FRONTENDS)",
    )
    br = bsub.add_parser(
        "replicas",
        help="1, 2, ... voxguard serve processes sharing one device, each under its own wrk",
        formatter_class=_HELP,
    )
    _served_options(br, settings)
    br.add_argument("--replicas", type=_csv_ints, default=[1, 2], help="comma-separated replica counts")
    ba = bsub.add_parser(
        "agreement",
        help="decisions and scores of an engine against eager on real files",
        formatter_class=_HELP,
    )
    ba.add_argument("files", nargs="+", type=Path, help="audio files to score with both engines")
    ba.add_argument("--model", default=settings.models[0], help=_MODEL_HELP)
    ba.add_argument("--checkpoint", default=settings.checkpoint, help="explicit checkpoint file")
    ba.add_argument("--checkpoint-dir", default=settings.checkpoint_dir, type=Path, help=_CHECKPOINT_DIR_HELP)
    _engine_option(ba, "bf16")
    ba.add_argument("--device", type=_setting("device"), default=settings.device, help=_DEVICE_HELP)
    _preprocess_option(ba, settings.preprocess)
    ba.add_argument("--json", action="store_true", help="print the report as JSON")

    e = sub.add_parser(
        "eval",
        help="evaluate on a labelled set: EER, min t-DCF, per-attack figures, report",
        formatter_class=_HELP,
    )
    e.add_argument(
        "source",
        type=Path,
        help="ASVspoof protocol/key file, path,label[,attack] CSV, or bonafide/+spoof/ folder",
    )
    e.add_argument(
        "--audio-dir", type=Path, help="audio folder of an ASVspoof protocol (for a CSV: path base)"
    )
    e.add_argument("--out", type=Path, required=True, help="report folder; the same folder again resumes")
    _model_options(e, settings)
    _engine_option(e, settings.engine)
    e.add_argument(
        "--protocol",
        choices=("service", "reference"),
        default="service",
        help="service: every window and the service's verdict rule, what voxguard answers (default); "
        "reference: the official AASIST evaluation (first window, raw samples), as papers report it",
    )
    e.add_argument(
        "--preprocess",
        choices=("robust", "reference"),
        help=f"default: the service's ({settings.preprocess}), or reference with --protocol reference",
    )
    e.add_argument("--batch-size", type=_count, default=0, help="windows per forward; 0 = 16 CPU / 64 CUDA")
    e.add_argument(
        "--workers", type=_count, default=settings.decode_workers, help="decoding threads; 0 = cores"
    )
    e.add_argument(
        "--threshold",
        type=_setting("threshold"),
        default=settings.threshold,
        help="FAKE at or above this fake probability (VOXGUARD_THRESHOLD)",
    )
    e.add_argument(
        "--asv-scores", type=Path, help="ASV scores for min t-DCF (ASVspoof 2019 'source key score')"
    )
    e.add_argument(
        "--format", choices=("md", "html", "both"), default="md", help="report.md, report.html or both"
    )
    e.add_argument("--json", action="store_true", help="print the headline figures as one JSON object")

    t = sub.add_parser(
        "train",
        help="train or fine-tune AASIST (official recipe); see docs/training.md",
        formatter_class=_HELP,
    )
    t.add_argument("--train", type=Path, required=True, help="ASVspoof protocol, path,label CSV or folder")
    t.add_argument("--train-audio-dir", type=Path, help="audio folder of an ASVspoof protocol")
    t.add_argument("--dev", type=Path, required=True, help="dev set (any layout): EER every epoch")
    t.add_argument("--dev-audio-dir", type=Path, help="audio folder of an ASVspoof dev protocol")
    t.add_argument("--out", type=Path, required=True, help="run folder: best.pt, last.pt, metrics.jsonl, ...")
    t.add_argument("--model", choices=tuple(ARCHITECTURES), help="architecture (default aasist, or --init's)")
    t.add_argument("--init", help="fine-tune from aasist | aasist-l (official weights) | a checkpoint PATH")
    t.add_argument("--name", help="model name the checkpoints record (default MODEL-OUTNAME)")
    t.add_argument("--epochs", type=_positive, default=Recipe.epochs, help="passes over the training set")
    t.add_argument("--batch-size", type=_positive, default=Recipe.batch_size, help="clips per step")
    t.add_argument("--lr", type=float, default=Recipe.lr, help="peak learning rate (cosine to --lr-min)")
    t.add_argument("--lr-min", type=float, default=Recipe.lr_min, help="learning rate at the last step")
    t.add_argument("--weight-decay", type=float, default=Recipe.weight_decay, help="Adam weight decay")
    t.add_argument(
        "--seed", type=_count, default=Recipe.seed, help="seed for weights, order and augmentation"
    )
    t.add_argument(
        "--class-weights",
        type=_class_weights,
        default=(Recipe.spoof_weight, Recipe.bonafide_weight),
        help="loss weights SPOOF,BONAFIDE (for ASVspoof's ~9:1 spoof:bona fide)",
    )
    t.add_argument("--augment", default="", help="comma-separated: gain,noise,telephone,codec (empty: none)")
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
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.add_argument("--stop-after", type=_positive, help="stop (resumably) after this many epochs")
    t.add_argument("--device", type=_setting("device"), default=settings.device, help=_DEVICE_HELP)
    t.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="autocast precision; auto = bf16 on CUDA, fp32 on CPU",
    )
    t.add_argument("--workers", type=_count, help="DataLoader processes (default: 0 on CPU, 8 on CUDA)")
    t.add_argument(
        "--cache", choices=("memory", "none"), default="memory", help="decode each file once into memory"
    )
    t.add_argument("--eval-batch-size", type=_positive, default=32, help="clips per dev forward")
    t.add_argument("--threads", type=_setting("threads"), default=settings.threads, help=_THREADS_HELP)
    t.add_argument("--checkpoint-dir", type=Path, default=settings.checkpoint_dir, help=_CHECKPOINT_DIR_HELP)
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=sys.stderr.isatty(),
        help="progress bars (on when stderr is a terminal; the log has a line per epoch either way)",
    )
    return parser


def _load_detector(args: argparse.Namespace, settings: Settings) -> Detector:
    """The Detector that ``_model_options`` describe, with torch's thread count set as asked."""
    from .inference import Detector
    from .process_tuning import set_threads

    detector = Detector.load(
        args.model,
        checkpoint=args.checkpoint,
        checkpoint_dir=args.checkpoint_dir,
        engine=args.engine,
        device=args.device,
        compile_model=args.compile,
        allocator_tuning=settings.allocator_tuning,
        cuda_graphs=args.cuda_graphs,
    )
    set_threads(args.threads)
    return detector


def _audio_files(paths: list[Path]) -> list[Path]:
    """Files as given; a folder becomes the audio files under it (the suffixes ``eval`` reads), sorted."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not found:
            raise SetupError(
                f"{path} is a folder with no audio files in it.",
                f"give audio files, or a folder holding {', '.join(AUDIO_SUFFIXES)} files",
            )
        files.extend(found)
    return files


def _predict(args: argparse.Namespace, settings: Settings) -> int:
    from .audio import AudioError
    from .pipeline import Pipeline
    from .progress import track

    settings = settings.model_copy(update={"preprocess": args.preprocess, "threshold": args.threshold})
    files = _audio_files(args.files)
    detector = _load_detector(args, settings)
    pipeline = Pipeline.from_settings(settings, detector.info.score_offset)
    failures = 0
    rows = []
    batch_size = settings.batch_size_for(detector.device.type)
    for path in track(files, len(files), "scoring", "file", disable=len(files) < 2):
        try:
            verdict = pipeline.run(path.read_bytes(), detector, batch_size)
        except (AudioError, OSError) as exc:
            failures += 1
            code = exc.code if isinstance(exc, AudioError) else "unreadable_file"
            detail = exc.detail if isinstance(exc, AudioError) else str(exc)
            record = {"file": str(path), "error": {"code": code, "detail": detail}}
        else:
            record = {"file": str(path), **verdict.record(detector.name)}
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            rows.append(record)
    if not args.json:
        _print_table(rows)
    return 1 if failures else 0


def _percent(p: float) -> str:
    """0.9996 is ">99.9%", never a rounded-up "100.0%" that would claim certainty (as on the web page)."""
    return ">99.9%" if p > 0.999 else "<0.1%" if p < 0.001 else f"{p:.1%}"


def _judged(show: Callable[[float], str], field: str) -> Callable[[dict], str]:
    """A verdict column: ``-`` where the outcome is INCONCLUSIVE and the field is null."""
    return lambda r: "-" if r[field] is None else show(r[field])


# The table's columns: header and how to show a scored file's record. Errors and warnings are not
# columns: a file that failed says ERROR with its code in "notes", and every warning (but the
# "repeated" one, a column of its own), error detail, synthetic segment or reason for no verdict is
# listed under the table, numbered like the notes that point to it.
_COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("verdict", lambda r: r["prediction"]),
    ("confidence", _judged(_percent, "confidence")),
    ("fake prob", _judged(lambda p: f"{p:.4f}", "fake_probability")),
    ("duration", lambda r: f"{r['duration_s']:.2f} s"),
    ("windows", lambda r: str(len(r["windows"]))),
)


def _leaning(r: dict) -> str:
    return "" if r["leaning"] is None else f"{r['leaning']} ({r['leaning_fake_probability']:.4f})"


# Shown only when a file is INCONCLUSIVE; the legend under the table says it is not a verdict.
_LEANING = ("leaning*", _leaning)
_LEANING_LEGEND = (
    "* leaning: for INCONCLUSIVE files only, the side the model leaned to and its fake probability; "
    "unreliable on so little speech, not a verdict"
)


def _repeated(r: dict) -> bool:
    from .scoring import REPEATED

    return any(w.endswith(REPEATED) for w in r["warnings"])


# Audio shorter than a window is common (voice notes) and says the same thing for every such file, so it
# is a column with one legend line, not a numbered note per file that would bury segments and errors.
_REPEATED = ("repeated*", lambda r: "yes" if _repeated(r) else "")
_REPEATED_LEGEND = (
    "* repeated: the audio is shorter than the model's 4.04 s window, so its speech was repeated to fill it"
)


def _print_table(rows: list[dict]) -> None:
    from .scoring import REPEATED, describe_segment

    columns = list(_COLUMNS)
    scored = [r for r in rows if "error" not in r]
    leaning = any(r["leaning"] for r in scored)
    repeated = any(_repeated(r) for r in scored)
    if leaning:
        columns.insert([name for name, _ in columns].index("fake prob") + 1, _LEANING)
    if repeated:
        columns.append(_REPEATED)
    header = ("file", *(name for name, _ in columns), "notes")
    lines = [header]
    notes: list[str] = []
    for r in rows:
        if "error" in r:
            code = r["error"]["code"]
            notes.append(f"{r['file']}: {code}: {r['error']['detail']}")
            lines.append((r["file"], "ERROR", *[""] * (len(columns) - 1), f"{code} [{len(notes)}]"))
            continue
        marks = []
        said = [describe_segment(x) for x in r["segments"]] + ([r["reason"]] if r["reason"] else [])
        for note in said + [w for w in r["warnings"] if not w.endswith(REPEATED)]:
            notes.append(f"{r['file']}: {note}")
            marks.append(f"[{len(notes)}]")
        lines.append((r["file"], *(show(r) for _, show in columns), " ".join(marks)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for shown, legend in ((leaning, _LEANING_LEGEND), (repeated, _REPEATED_LEGEND)):
        if shown:
            print(legend)
    if notes:
        print()
        for number, note in enumerate(notes, start=1):
            print(f"[{number}] {note}")


def _eval(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from .evaluation import report  # needs matplotlib: fail before any scoring, not after
    except ImportError as exc:
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
    from .datasets import DatasetError, load_dataset
    from .evaluation.runner import score_dataset, scoring_protocol
    from .evaluation.scorefile import ScoreFileError, check_provenance, read_asv_scores
    from .evaluation.summary import RunInfo, build_summary, labelled_scores

    scores_path = args.out / report.SCORES_FILE
    try:
        dataset = load_dataset(args.source, args.audio_dir)
        asv = read_asv_scores(args.asv_scores) if args.asv_scores else None
        detector = _load_detector(args, settings)
        rule = settings.model_copy(update={"threshold": args.threshold}).rule(detector.info.score_offset)
        protocol = scoring_protocol(
            settings.audio_options(), rule, name=args.protocol, preprocess=args.preprocess
        )
        args.out.mkdir(parents=True, exist_ok=True)
        provenance = {
            "model": detector.name,
            "checkpoint_sha256": detector.info.sha256,
            "engine": args.engine,
        }
        check_provenance(
            scores_path,
            {
                **provenance,
                "protocol": protocol.name,
                "audio": asdict(protocol.options),
                "rule": {
                    "min_windows": protocol.rule.min_windows,
                    "min_reliable_s": protocol.rule.min_reliable_s,
                },
            },
        )
        batch_size = args.batch_size or settings.batch_size_for(detector.device.type)
        workers = args.workers or os.cpu_count() or 1
        result = score_dataset(
            dataset, detector, protocol, scores_path=scores_path, batch_size=batch_size, workers=workers
        )
    except (DatasetError, ScoreFileError) as exc:
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voxguard: interrupted; rerun the same command to resume from {scores_path}", file=sys.stderr)
        return 130
    labelled = labelled_scores(dataset, result.scores)
    run = RunInfo(
        model=detector.name,
        checkpoint_sha256=detector.info.sha256,
        engine=args.engine,
        device=str(detector.device),
        protocol=protocol.name,
        preprocess=protocol.options.preprocess,
        batch_size=batch_size,
        workers=workers,
        scored=result.scored,
        resumed=result.resumed,
        windows=result.windows,
        seconds=round(result.seconds, 3),
        score_offset=protocol.rule.offset,
        min_fake_windows=protocol.rule.min_windows,
        min_reliable_s=protocol.rule.min_reliable_s,
    )
    summary = build_summary(
        dataset,
        str(args.source),
        labelled,
        result.failures,
        result.inconclusive,
        run,
        threshold=args.threshold,
        asv=asv,
    )
    formats = ("md", "html") if args.format == "both" else (args.format,)
    written = report.write_report(args.out, summary, labelled, formats)
    if args.json:
        print(json.dumps({**summary.headline(), "report": str(args.out)}))
        return 0
    print(report.render_text(summary, written))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from .model.locate import require_weights

    overrides = {name: getattr(args, name, getattr(settings, name)) for name in Settings.model_fields}
    if (args.certfile is None) != (args.keyfile is None):
        raise SystemExit("voxguard: --certfile and --keyfile go together")
    settings = Settings(**overrides)
    if settings.engine != "simulated":
        # Before the model stack is imported: on a cold machine torch alone takes seconds to load.
        require_weights(settings.models, settings.checkpoint, settings.checkpoint_dir)
    from .processes.launch import serve

    logging.getLogger("voxguard").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    return serve(settings)


def _train(args: argparse.Namespace) -> int:
    from .datasets import DatasetError
    from .training import TrainingError
    from .training.augment import parse_augmentations
    from .training.trainer import Runtime, train

    logging.getLogger("voxguard").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    absolute = {
        k: str(getattr(args, k).resolve()) if getattr(args, k) else None
        for k in ("train", "train_audio_dir", "dev", "dev_audio_dir")
    }
    init = args.init if args.init is None or args.init in REGISTRY else str(Path(args.init).resolve())
    try:
        recipe = Recipe(
            **absolute,
            model=args.model,
            init=init,
            name=args.name,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            lr_min=args.lr_min,
            weight_decay=args.weight_decay,
            seed=args.seed,
            spoof_weight=args.class_weights[0],
            bonafide_weight=args.class_weights[1],
            augment=parse_augmentations(args.augment),
            augment_probability=args.augment_prob,
            swa=args.swa,
        )
        runtime = Runtime(
            out=args.out,
            device=args.device,
            precision=args.precision,
            workers=args.workers,
            cache=args.cache,
            eval_batch_size=args.eval_batch_size,
            threads=args.threads,
            checkpoint_dir=args.checkpoint_dir,
            progress=args.progress,
            resume=args.resume,
            stop_after=args.stop_after,
        )
    except ValueError as exc:  # an invalid recipe or runtime value, named in the message
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
    try:
        summary = train(recipe, runtime)
    except (TrainingError, DatasetError) as exc:
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
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
    return 0


def _weights(args: argparse.Namespace) -> int:
    from .model.checkpoints import fetch
    from .model.locate import REGISTRY, CheckpointError, download_dir, find_dir

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


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from .benchmarks import model_bench

    if args.bench in ("serve", "replicas"):
        from .benchmarks import serve_bench

        serve_args = [
            *("--models", args.model, "--device", args.device, "--engine", args.engine),
            *("--simulated-ms", _as_text(args.simulated_ms)),
            *("--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)),
            *("--queue-size", str(max(1024, 4 * args.connections))),
            "--cuda-graphs" if args.cuda_graphs else "--no-cuda-graphs",
        ]
        env = {"VOXGUARD_CHECKPOINT_DIR": str(args.checkpoint_dir.resolve())} if args.checkpoint_dir else {}
        load = {
            "connections": args.connections,
            "duration_s": args.duration,
            "body_kind": args.body,
            "env": env,
        }
        if args.bench == "replicas":
            # Independent single-process servers: the front-end count is what bench serve compares.
            report = serve_bench.bench_replicas(
                [*serve_args, "--frontends", "1"], replicas=args.replicas, **load
            )
            render = serve_bench.render_replicas
        else:
            report = serve_bench.bench_serve(serve_args, frontends=args.frontends, **load)
            capacity = serve_bench.simulated_capacity(args.simulated_ms, args.max_batch_size or 64)
            if args.engine == "simulated" and capacity:
                report["device_capacity_rps"] = round(capacity, 1)
                report["share_of_device"] = round(report["voxguard"]["throughput_rps"] / capacity, 3)
                # One window per request: no server can pass the device, so this is the best ratio possible.
                report["device_ratio_to_floor"] = round(capacity / report["floor"]["throughput_rps"], 3)
            render = serve_bench.render_serve
    elif args.bench == "agreement":
        report = model_bench.engine_agreement(
            args.model,
            args.files,
            engine=args.engine,
            device=args.device,
            checkpoint=args.checkpoint,
            checkpoint_dir=args.checkpoint_dir,
            options=settings.model_copy(update={"preprocess": args.preprocess}).audio_options(),
            rule=settings.rule(),
        )
        render = model_bench.render_agreement
    else:
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        unknown = sorted(set(engines) - set(MODEL_ENGINES))
        if unknown:
            raise SystemExit(
                f"voxguard: unknown engine(s) {', '.join(unknown)}; choose from {', '.join(MODEL_ENGINES)}"
            )
        report = model_bench.bench_model(
            args.model,
            engines=engines,
            batch_sizes=args.batch_sizes,
            repeat=args.repeat,
            device=args.device,
            checkpoint=args.checkpoint,
            checkpoint_dir=args.checkpoint_dir,
            allocator=args.allocator,
            compile_model=args.compile,
            cuda_graphs=args.cuda_graphs,
            threads=args.threads,
        )
        render = model_bench.render_model
    print(json.dumps(report) if args.json else render(report))
    return 0


def _corpus(args: argparse.Namespace) -> int:
    from .corpus.build import Sizes, build

    logging.getLogger("voxguard").setLevel(logging.INFO)
    families = [f.strip() for f in args.families.split(",")] if args.families else None
    entries = build(args.shared, args.out, Sizes.named(args.size), args.seed, args.workers, families)
    counts = Counter((e.split, e.label) for e in entries)
    print(
        f"{args.out / 'manifest.csv'}: {len(entries)} files; "
        + ", ".join(f"{s} {lab} {n}" for (s, lab), n in sorted(counts.items()))
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a :class:`SetupError` (bad setting, missing weights, no GPU, port taken) is one
    ``voxguard: ...`` line on stderr and exit status 2, never a traceback."""
    try:
        settings = settings_from_environment()
        args = build_parser(settings).parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if args.command == "predict":
            return _predict(args, settings)
        if args.command == "serve":
            return _serve(args, settings)
        if args.command == "weights":
            return _weights(args)
        if args.command == "eval":
            return _eval(args, settings)
        if args.command == "train":
            return _train(args)
        if args.command == "corpus":
            return _corpus(args)
        return _bench(args, settings)
    except SetupError as exc:
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
