"""Flags shared by several commands, most of them generated from the ``Settings`` fields they mirror.

A flag that stands for a setting (``--device`` for ``VOXGUARD_DEVICE``) is made by :func:`setting_flag`:
its help is the field's description, its type validates as the variable does, its choices are the
field's ``Literal`` values and its default is the current setting. Nothing here imports torch, so
``voxguard --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from pydantic import ValidationError

from ..model.locate import REGISTRY
from ..settings import Settings

if TYPE_CHECKING:  # torch comes with it: commands import it when they run
    from ..inference import Detector

# Every option shows its default in --help.
HELP = argparse.ArgumentDefaultsHelpFormatter
ENGINES: tuple[str, ...] = get_args(Settings.model_fields["engine"].annotation)
# The engines that run a model; "simulated" stands in for an accelerator and only makes sense where a
# server is measured (serve, bench serve).
MODEL_ENGINES = tuple(e for e in ENGINES if e != "simulated")
PREPROCESS: tuple[str, ...] = get_args(Settings.model_fields["preprocess"].annotation)
MODEL_HELP = f"model to use: {' | '.join(REGISTRY)} (VOXGUARD_MODELS: its first)"

# Never printed by --help; prefer the variable (ps shows flags).
_SECRET_SETTINGS = frozenset({"api_keys"})
_CURRENT: Any = object()  # "the setting's current value" (a default of None means no default)


def subcommand(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    """A (sub-)command's parser, showing every default in its --help."""
    return sub.add_parser(name, help=help_text, formatter_class=HELP)


def picked(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The flags ``names`` as keyword arguments, for a function whose parameters bear the same names."""
    return {name: getattr(args, name) for name in names}


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


def as_text(value: object) -> object:
    """A setting's value as its variable would spell it (lists with commas), for --help and re-parsing."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


def setting_flag(
    parser: argparse.ArgumentParser,
    settings: Settings,
    name: str,
    *,
    flag: str | None = None,
    default: Any = _CURRENT,
    choices: tuple[str, ...] | None = None,
    help_text: str | None = None,
) -> None:
    """The flag for the ``Settings`` field ``name`` (``--request-timeout-s`` for ``request_timeout_s``),
    validated as its variable is, with the field's description (or ``help_text``) as help, its
    ``Literal`` values (or ``choices``) as choices and the current setting (or ``default``) as default."""
    field = Settings.model_fields[name]
    flag = flag or "--" + name.replace("_", "-")
    text = f"{help_text or field.description} (VOXGUARD_{name.upper()})".replace("%", "%%")
    value = getattr(settings, name) if default is _CURRENT else default
    if name in _SECRET_SETTINGS:
        parser.add_argument(flag, type=_setting(name), default=argparse.SUPPRESS, help=text)
    elif field.annotation is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=text)
    else:
        if choices is None and get_origin(field.annotation) is Literal:
            choices = get_args(field.annotation)
        parser.add_argument(flag, type=_setting(name), default=as_text(value), choices=choices, help=text)


def all_settings(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """Every setting as a flag. Settings are declared once, in ``Settings``: a new field is a new flag."""
    for name in Settings.model_fields:
        setting_flag(parser, settings, name)


def csv_ints(value: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from exc
    if not items or min(items) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return items


def count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {value!r}")
    return number


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def engine_option(
    parser: argparse.ArgumentParser, settings: Settings, default: str, *, simulated: bool = False
) -> None:
    """``--engine``: every engine where a server is measured, else the ones that run a model."""
    description = Settings.model_fields["engine"].description or ""
    setting_flag(
        parser,
        settings,
        "engine",
        choices=ENGINES if simulated else MODEL_ENGINES,
        default=default if simulated or default != "simulated" else "fast",
        help_text=description if simulated else description.split("; simulated")[0],
    )


def model_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """The model to load and how: what :func:`load_detector` reads."""
    parser.add_argument("--model", default=settings.models[0], help=MODEL_HELP)
    for name in ("checkpoint", "checkpoint_dir", "device", "threads", "compile", "cuda_graphs"):
        setting_flag(parser, settings, name)


def load_detector(args: argparse.Namespace, settings: Settings) -> Detector:
    """The Detector that :func:`model_options` describe, loaded as the service loads its models (the
    flags in place of their settings), with torch's thread count set as asked."""
    from ..process_tuning import set_threads

    flags = picked(args, "checkpoint_dir", "engine", "device", "compile", "cuda_graphs")
    detector = settings.model_copy(update=flags).loading.detector.load(args.model, args.checkpoint)
    set_threads(args.threads)
    return detector


def json_option(parser: argparse.ArgumentParser, what: str = "print the report as JSON") -> None:
    parser.add_argument("--json", action="store_true", help=what)
