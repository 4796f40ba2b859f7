"""``voxguard bench``: time the engines (model), the server under load (serve, replicas), and compare an
engine's decisions with eager's (agreement)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..settings import Settings
from .options import (
    MODEL_ENGINES,
    MODEL_HELP,
    as_text,
    csv_ints,
    engine_option,
    json_option,
    model_options,
    picked,
    positive,
    setting_flag,
    subcommand,
)

Report = tuple[dict[str, Any], Callable[[dict[str, Any]], str]]


def add(sub: argparse._SubParsersAction, settings: Settings) -> argparse.ArgumentParser:
    b = subcommand(sub, "bench", "benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    _add_model(bsub, settings)
    bs = subcommand(
        bsub, "serve", "voxguard serve under a native load generator (wrk), against the framework floor"
    )
    _served_options(bs, settings)
    bs.add_argument(
        "--frontends",
        type=csv_ints,
        default=[1, 2],
        help="comma-separated front-end counts to measure voxguard with (VOXGUARD_FRONTENDS)",
    )
    br = subcommand(
        bsub, "replicas", "1, 2, ... voxguard serve processes sharing one device, each under its own wrk"
    )
    _served_options(br, settings)
    br.add_argument("--replicas", type=csv_ints, default=[1, 2], help="comma-separated replica counts")
    _add_agreement(bsub, settings)
    return b


def _add_model(bsub: argparse._SubParsersAction, settings: Settings) -> None:
    bm = subcommand(bsub, "model", "time the inference engines against each other")
    model_options(bm, settings)
    bm.add_argument("--engines", default=",".join(MODEL_ENGINES), help="comma-separated engines to time")
    bm.add_argument("--batch-sizes", type=csv_ints, default=[1, 16], help="comma-separated batch sizes")
    bm.add_argument("--repeat", type=positive, default=3, help="timed runs per engine and batch size")
    bm.add_argument(
        "--allocator",
        choices=("tuned", "system"),
        default="tuned" if settings.allocator_tuning else "system",
        help="glibc heap tuning (tuned) or the system default (VOXGUARD_ALLOCATOR_TUNING)",
    )
    json_option(bm)


def _add_agreement(bsub: argparse._SubParsersAction, settings: Settings) -> None:
    ba = subcommand(bsub, "agreement", "decisions and scores of an engine against eager on real files")
    ba.add_argument("files", nargs="+", type=Path, help="audio files to score with both engines")
    ba.add_argument("--model", default=settings.models[0], help=MODEL_HELP)
    setting_flag(ba, settings, "checkpoint")
    setting_flag(ba, settings, "checkpoint_dir")
    engine_option(ba, settings, "bf16")
    setting_flag(ba, settings, "device")
    setting_flag(ba, settings, "preprocess")
    json_option(ba)


def _served_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """What ``bench serve`` and ``bench replicas`` start servers with, and how they load them."""
    parser.add_argument("--model", default=settings.models[0], help=MODEL_HELP)
    setting_flag(parser, settings, "checkpoint_dir")
    setting_flag(parser, settings, "device")
    engine_option(parser, settings, settings.engine, simulated=True)
    for name in ("simulated_ms", "cuda_graphs", "max_batch_size", "max_wait_ms"):
        setting_flag(parser, settings, name)
    parser.add_argument("--connections", type=positive, default=64, help="wrk connections, all together")
    parser.add_argument("--duration", type=positive, default=15, help="seconds of load per measurement")
    parser.add_argument("--body", choices=("wav", "flac"), default="wav", help="the upload: 4.04 s at 16 kHz")
    json_option(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.bench in ("serve", "replicas"):
        report, render = _served(args)
    elif args.bench == "agreement":
        report, render = _agreement(args, settings)
    else:
        report, render = _model(args)
    print(json.dumps(report) if args.json else render(report))
    return 0


def _served(args: argparse.Namespace) -> Report:
    from ..benchmarks import serve_bench

    serve_args = [
        *("--models", args.model, "--device", args.device, "--engine", args.engine),
        *("--simulated-ms", as_text(args.simulated_ms)),
        *("--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)),
        *("--queue-size", str(max(1024, 4 * args.connections))),
        "--cuda-graphs" if args.cuda_graphs else "--no-cuda-graphs",
    ]
    env = {"VOXGUARD_CHECKPOINT_DIR": str(args.checkpoint_dir.resolve())} if args.checkpoint_dir else {}
    load = {"connections": args.connections, "duration_s": args.duration, "body_kind": args.body, "env": env}
    if args.bench == "replicas":
        # Independent single-process servers: the front-end count is what bench serve compares.
        report = serve_bench.bench_replicas([*serve_args, "--frontends", "1"], replicas=args.replicas, **load)
        return report, serve_bench.render_replicas
    report = serve_bench.bench_serve(serve_args, frontends=args.frontends, **load)
    capacity = serve_bench.simulated_capacity(args.simulated_ms, args.max_batch_size or 64)
    if args.engine == "simulated" and capacity:
        report["device_capacity_rps"] = round(capacity, 1)
        report["share_of_device"] = round(report["voxguard"]["throughput_rps"] / capacity, 3)
        # One window per request: no server can pass the device, so this is the best ratio possible.
        report["device_ratio_to_floor"] = round(capacity / report["floor"]["throughput_rps"], 3)
    return report, serve_bench.render_serve


def _agreement(args: argparse.Namespace, settings: Settings) -> Report:
    from ..benchmarks import model_bench

    report = model_bench.engine_agreement(
        args.model,
        args.files,
        engine=args.engine,
        device=args.device,
        checkpoint=args.checkpoint,
        checkpoint_dir=args.checkpoint_dir,
        options=settings.model_copy(update={"preprocess": args.preprocess}).audio,
        rule=settings.rule,
    )
    return report, model_bench.render_agreement


def _model(args: argparse.Namespace) -> Report:
    from ..benchmarks import model_bench

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(MODEL_ENGINES))
    if unknown:
        raise SystemExit(
            f"voxguard: unknown engine(s) {', '.join(unknown)}; choose from {', '.join(MODEL_ENGINES)}"
        )
    report = model_bench.bench_model(
        args.model,
        engines=engines,
        **picked(
            args,
            *("batch_sizes", "repeat", "device", "checkpoint", "checkpoint_dir", "allocator"),
            *("cuda_graphs", "threads"),
        ),
        compile_model=args.compile,
    )
    return report, model_bench.render_model
