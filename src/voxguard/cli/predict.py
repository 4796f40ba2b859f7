"""``voxguard predict``: score audio files, as a table or one JSON line per file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..datasets import AUDIO_SUFFIXES
from ..settings import Settings
from ..setup_errors import SetupError
from .options import engine_option, json_option, load_detector, model_options, setting_flag, subcommand


def add(sub: argparse._SubParsersAction, settings: Settings) -> argparse.ArgumentParser:
    p = subcommand(sub, "predict", "score audio files: REAL or FAKE")
    p.add_argument(
        "files",
        nargs="+",
        type=Path,
        help=f"audio files or folders (their {', '.join(AUDIO_SUFFIXES)} files)",
    )
    model_options(p, settings)
    engine_option(p, settings, settings.engine)
    setting_flag(p, settings, "preprocess")
    setting_flag(p, settings, "threshold")
    json_option(p, "one JSON object per line per file")
    return p


def audio_files(paths: list[Path]) -> list[Path]:
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


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..audio.errors import AudioError
    from ..model.localizer import Localizer
    from ..pipeline import Pipeline
    from ..progress import track
    from .table import print_table

    settings = settings.model_copy(update={"preprocess": args.preprocess, "threshold": args.threshold})
    files = audio_files(args.files)
    detector = load_detector(args, settings)
    pipeline = Pipeline(settings.audio, settings.rule.for_loaded(detector.info), Localizer.load())
    failures = 0
    rows = []
    batch_size = settings.batching.batch_size_for(detector.device.type)
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
        print_table(rows)
    return 1 if failures else 0
