"""``voxguard eval``: score a labelled set and write its report (EER, min t-DCF, per-attack figures)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import Settings
from .options import (
    PREPROCESS,
    engine_option,
    json_option,
    load_detector,
    model_options,
    setting_flag,
    subcommand,
)

if TYPE_CHECKING:
    from ..datasets import Dataset
    from ..evaluation.runner import RunResult, ScoringProtocol
    from ..evaluation.summary import RunInfo
    from ..inference import Detector


def add(sub: argparse._SubParsersAction, settings: Settings) -> argparse.ArgumentParser:
    e = subcommand(sub, "eval", "evaluate on a labelled set: EER, min t-DCF, per-attack figures, report")
    e.add_argument(
        "source",
        type=Path,
        help="ASVspoof protocol/key file, path,label[,attack] CSV, or bonafide/+spoof/ folder",
    )
    e.add_argument(
        "--audio-dir", type=Path, help="audio folder of an ASVspoof protocol (for a CSV: path base)"
    )
    e.add_argument("--out", type=Path, required=True, help="report folder; the same folder again resumes")
    model_options(e, settings)
    engine_option(e, settings, settings.engine)
    e.add_argument(
        "--protocol",
        choices=("service", "reference"),
        default="service",
        help="service: every window and the service's verdict rule, what voxguard answers (default); "
        "reference: the official AASIST evaluation (first window, raw samples), as papers report it",
    )
    e.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        help=f"default: the service's ({settings.preprocess}), or reference with --protocol reference",
    )
    setting_flag(e, settings, "max_batch_size", flag="--batch-size")
    setting_flag(e, settings, "decode_workers", flag="--workers")
    setting_flag(e, settings, "threshold")
    e.add_argument(
        "--asv-scores", type=Path, help="ASV scores for min t-DCF (ASVspoof 2019 'source key score')"
    )
    e.add_argument(
        "--format", choices=("md", "html", "both"), default="md", help="report.md, report.html or both"
    )
    json_option(e, "print the headline figures as one JSON object")
    return e


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from ..evaluation import report  # needs matplotlib: fail before any scoring, not after
    except ImportError as exc:
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
    from ..datasets import DatasetError, load_dataset
    from ..evaluation.scorefile import ScoreFileError, read_asv_scores
    from ..evaluation.summary import build_summary, labelled_scores

    scores_path = args.out / report.SCORES_FILE
    try:
        dataset = load_dataset(args.source, args.audio_dir)
        asv = read_asv_scores(args.asv_scores) if args.asv_scores else None
        detector = load_detector(args, settings)
        protocol, result, sizes = _score(args, settings, dataset, detector, scores_path)
    except (DatasetError, ScoreFileError) as exc:
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voxguard: interrupted; rerun the same command to resume from {scores_path}", file=sys.stderr)
        return 130
    labelled = labelled_scores(dataset, result.scores)
    run_info = _run_info(args, detector, protocol, result, sizes)
    summary = build_summary(
        dataset,
        str(args.source),
        labelled,
        result.failures,
        result.inconclusive,
        run_info,
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


def _score(
    args: argparse.Namespace, settings: Settings, dataset: Dataset, detector: Detector, scores_path: Path
) -> tuple[ScoringProtocol, RunResult, tuple[int, int]]:
    """Score what ``scores_path`` does not hold yet, after checking it was scored the same way."""
    from ..evaluation.runner import score_dataset, scoring_protocol
    from ..evaluation.scorefile import check_provenance

    rule = settings.model_copy(update={"threshold": args.threshold}).rule.for_loaded(detector.info)
    protocol = scoring_protocol(settings.audio, rule, name=args.protocol, preprocess=args.preprocess)
    # local_margin only when set, so that files scored before the option existed still resume
    local = {} if rule.local_margin is None else {"local_margin": rule.local_margin}
    args.out.mkdir(parents=True, exist_ok=True)
    check_provenance(
        scores_path,
        {
            "model": detector.name,
            "checkpoint_sha256": detector.info.sha256,
            "engine": args.engine,
            "protocol": protocol.name,
            "audio": asdict(protocol.options),
            "rule": {
                "min_windows": protocol.rule.min_windows,
                "min_reliable_s": protocol.rule.min_reliable_s,
                "offset": protocol.rule.offset,
                "scale": protocol.rule.scale,
                **local,
            },
        },
    )
    batch_size = args.batch_size or settings.batching.batch_size_for(detector.device.type)
    workers = args.workers or os.cpu_count() or 1
    result = score_dataset(
        dataset, detector, protocol, scores_path=scores_path, batch_size=batch_size, workers=workers
    )
    return protocol, result, (batch_size, workers)


def _run_info(
    args: argparse.Namespace,
    detector: Detector,
    protocol: ScoringProtocol,
    result: RunResult,
    sizes: tuple[int, int],
) -> RunInfo:
    from ..evaluation.summary import RunInfo

    batch_size, workers = sizes
    return RunInfo(
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
        score_scale=protocol.rule.scale,
        min_fake_windows=protocol.rule.min_windows,
        min_reliable_s=protocol.rule.min_reliable_s,
        local_margin=protocol.rule.local_margin,
    )
