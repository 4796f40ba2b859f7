"""The ``voxguard`` argument parser: one sub-command per module of this package."""

from __future__ import annotations

import argparse

from ..settings import Settings
from . import bench, corpus, evaluate, predict, serve, train, weights
from .options import HELP

# In the order ``voxguard --help`` lists them.
COMMANDS = (predict, serve, weights, corpus, bench, evaluate, train)


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """Every command's flags, with ``settings`` (the ``VOXGUARD_*`` variables) as their defaults, and
    ``run``: the function of the command's module that carries it out."""
    parser = argparse.ArgumentParser(
        prog="voxguard", description="Voice-deepfake detection with AASIST.", formatter_class=HELP
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub, settings).set_defaults(run=command.run)
    return parser
