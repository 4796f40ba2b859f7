"""The ``voxguard`` command: predict, serve, weights, corpus, bench, eval and train, a module each.

Each command module has ``add`` (its flags, on the parser :mod:`.parser` builds) and ``run``. Flags that
stand for settings are generated from ``Settings`` (:mod:`.options`). No module imports torch before a
command runs, so ``voxguard --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from ..settings import settings_from_environment
from ..setup_errors import SetupError
from .parser import build_parser


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
        return args.run(args, settings)
    except SetupError as exc:
        print(f"voxguard: {exc}", file=sys.stderr)
        return 2
