"""``voxguard serve``: the HTTP service; every setting is a flag here (generated from ``Settings``)."""

from __future__ import annotations

import argparse
import logging

from ..settings import Settings
from .options import all_settings, subcommand


def add(sub: argparse._SubParsersAction, settings: Settings) -> argparse.ArgumentParser:
    s = subcommand(
        sub, "serve", "run the HTTP service; every setting is a flag here or a VOXGUARD_* variable"
    )
    all_settings(s, settings)
    return s


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..model.locate import require_weights

    overrides = {name: getattr(args, name, getattr(settings, name)) for name in Settings.model_fields}
    if (args.certfile is None) != (args.keyfile is None):
        raise SystemExit("voxguard: --certfile and --keyfile go together")
    settings = Settings(**overrides)
    if settings.engine != "simulated":
        # Before the model stack is imported: on a cold machine torch alone takes seconds to load.
        require_weights(settings.models, settings.checkpoint, settings.checkpoint_dir)
    from ..processes.launch import serve

    logging.getLogger("voxguard").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    return serve(settings)
