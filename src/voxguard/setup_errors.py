"""Problems the person running voxguard can fix: bad settings, missing weights, no GPU, a taken port.

Each one is a :class:`SetupError` with a ``detail`` (what is wrong) and a ``hint`` (how to fix it). The
command line prints it as one ``voxguard: ...`` line and exits 2, without a traceback; the modules that
raise one (settings, checkpoints, inference, server, training) need to know nothing about the CLI.
This module imports nothing heavy, so ``voxguard --help`` stays fast.
"""

from __future__ import annotations


class SetupError(Exception):
    """Something about how voxguard was configured or invoked; ``hint`` says what to change."""

    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail, hint)  # both go to Exception, so the error pickles across processes
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.detail} Hint: {self.hint}" if self.hint else self.detail
