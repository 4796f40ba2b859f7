"""Loading, saving and fetching checkpoints, with failures that say precisely what is wrong.

Two file shapes load:

* the official upstream files, plain ``state_dict`` pickles whose config is known only from the
  registry (``locate.py``) (so they are identified by name and, in the checkpoint directory, by sha256);
* voxguard's own checkpoints written by :func:`save_checkpoint`, which carry their config and
  therefore load by path whatever their hash.

Every failure is a :class:`CheckpointError` with a stable ``code`` so the CLI and the service can
map it to an exit status or an HTTP error without parsing messages.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..progress import progress_bar
from .config import ModelConfig, config_from_dict
from .factory import build_model
from .locate import (
    AASIST_SCORE_OFFSET,
    UPSTREAM_COMMIT,
    CheckpointError,
    CheckpointSpec,
    resolve_checkpoint,
    sha256_file,
    spec_of,
)

logger = logging.getLogger(__name__)

VOXGUARD_FORMAT = "voxguard-checkpoint"
VOXGUARD_FORMAT_VERSION = 1
_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready for inference (eval mode, CPU) plus where it came from.

    ``name`` is the requested name for official files and the name recorded in the file for
    voxguard checkpoints; ``sha256`` is always the hash of the file actually read. ``score_offset`` is
    what the verdict rule adds to this model's margins unless the operator sets one: the registry's for
    official files, the one a voxguard checkpoint records, else 6 for AASIST and 0 for SpecNet (whose
    recipe folds its calibration into its output layer). ``score_scale`` multiplies the offset margin
    the same way: the registry's for official files (fitted on held-out speech), else the recorded one,
    else 1 (the network's own confidence). ``local_margin`` is the file rule's margin for one window's
    evidence (``scoring.Rule.local_margin``) a voxguard checkpoint records, else None (the best-run rule).
    """

    name: str
    path: Path
    sha256: str
    config: ModelConfig
    model: nn.Module
    score_offset: float = AASIST_SCORE_OFFSET
    score_scale: float = 1.0
    local_margin: float | None = None


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        "checkpoint_corrupt",
        f"{path} is not a usable checkpoint: {why}.",
        "re-download it (`make weights`) or point --checkpoint at a file written by voxguard or upstream",
    )


def _read(path: Path) -> Any:
    # weights_only=True: a checkpoint must never be able to run code; map_location="cpu" because
    # the official files were saved from CUDA tensors.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise _corrupt(path, f"cannot be read by torch.load ({_summarize_load_error(exc)})") from exc


def _summarize_load_error(exc: Exception) -> str:
    """First sentence of torch's error: its messages run to several paragraphs of advice."""
    text = " ".join(str(exc).split())
    _, marker, detail = text.partition("WeightsUnpickler error: ")
    if marker:  # random bytes and pickled arbitrary objects both end up here
        reason = detail.split(" Check the documentation")[0].split(". ")[0].rstrip(".")
        return "weights-only unpickler refused it: " + reason
    return text.split(". ")[0].rstrip(".") or type(exc).__name__


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise _corrupt(path, f"expected a non-empty dict of tensors, found {type(obj).__name__}")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise _corrupt(path, f"entry {bad!r} is not a named tensor, so this is not a state_dict")
    return dict(obj)


def _own_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights a voxguard file holds: all but those the model loads from elsewhere (``EXTERNAL``)."""
    external = getattr(model, "EXTERNAL", ())
    return {k: v for k, v in model.state_dict().items() if not k.startswith(external)}


def _check_keys_and_shapes(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, name: str
) -> None:
    """Name the first offending key; ``load_state_dict``'s own message lists every key at once."""
    expected = _own_state(model)
    hint = f"make sure the file holds {name!r} weights (AASIST and AASIST-L weights are not interchangeable)"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    for keys, kind in ((missing, "missing from"), (unexpected, "unexpected in")):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise CheckpointError(
                "checkpoint_mismatch", f"Key {keys[0]!r} is {kind} {path} for model {name!r}{more}.", hint
            )
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape:
            raise CheckpointError(
                "checkpoint_mismatch",
                f"Key {key!r} in {path} has shape {tuple(got.shape)} but model {name!r} expects "
                f"{tuple(want.shape)}.",
                hint,
            )


def _unpack(
    obj: Any, requested: str, path: Path, sha: str
) -> tuple[str, ModelConfig, dict[str, torch.Tensor], float, float, float | None]:
    """Tell the two accepted file shapes apart; return (name, config, state_dict, score offset, score
    scale, local margin)."""
    if isinstance(obj, Mapping) and obj.get("format") == VOXGUARD_FORMAT:
        version = obj.get("version")
        if version != VOXGUARD_FORMAT_VERSION:
            raise _corrupt(path, f"voxguard checkpoint version {version!r} is not supported")
        try:
            config = config_from_dict(obj["config"])
            recorded = str(obj["model"])
            default = AASIST_SCORE_OFFSET if config.architecture == "AASIST" else 0.0
            extra = obj.get("extra") or {}
            offset = float(extra.get("score_offset", default))
            scale = float(extra.get("score_scale", 1.0))
            local = None if extra.get("local_margin") is None else float(extra["local_margin"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise _corrupt(path, f"voxguard checkpoint has no valid config ({exc!r})") from exc
        if recorded != requested:
            logger.info(
                "%s holds model %r (requested %r); using the config stored in it", path, recorded, requested
            )
        return recorded, config, _as_state_dict(obj.get("state_dict"), path), offset, scale, local
    state = _as_state_dict(obj, path)
    spec = spec_of(requested)  # a plain state_dict has no config of its own: the name must supply it
    if sha != spec.sha256:
        logger.warning(
            "%s is not the published %s (sha256 %s, published %s); loading it with the %r config",
            path,
            spec.filename,
            sha,
            spec.sha256,
            requested,
        )
    return requested, spec.config, state, spec.score_offset, spec.score_scale, None


def load_checkpoint(
    name: str,
    path: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    verify: bool = True,
) -> LoadedCheckpoint:
    """Load ``name`` strictly into a fresh network of its architecture on CPU, in eval mode.

    With ``verify`` a registry file found in the checkpoint directory must have the published
    sha256 (a stale or tampered download is refused rather than silently scored with). A file
    given by explicit ``path`` is the caller's choice and is accepted whatever its hash.
    """
    explicit = path is not None
    file = resolve_checkpoint(name, path, checkpoint_dir)
    sha = sha256_file(file)
    if not explicit and verify:
        spec = spec_of(name)
        if sha != spec.sha256:
            raise CheckpointError(
                "checksum_mismatch",
                f"{file} does not match the published {spec.filename}: expected sha256 {spec.sha256}, "
                f"got {sha}.",
                f"re-run `make weights` or `voxguard weights --model {name}` (it replaces a bad copy)",
            )
    model_name, config, state, offset, scale, local = _unpack(_read(file), name, file, sha)
    try:
        model = build_model(config)
    except Exception as exc:  # a hand-edited config can fail in many ways inside the constructor
        raise _corrupt(file, f"its config cannot build a {config.architecture} model ({exc!r})") from exc
    _check_keys_and_shapes(model, state, file, model_name)
    if hasattr(model, "load_external"):
        model.load_external()
        state = {**model.state_dict(), **state}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied; keys and shapes were checked above
        raise CheckpointError(
            "checkpoint_mismatch", f"{file} does not load into model {model_name!r}: {exc}"
        ) from exc
    model.eval()
    logger.info("loaded %s from %s (sha256 %s)", model_name, file, sha)
    return LoadedCheckpoint(model_name, file, sha, config, model, offset, scale, local)


def _check_plain(value: Any, where: str) -> None:
    """Reject values that ``torch.load(weights_only=True)`` could not read back."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} holds a {type(value).__name__}, which a weights-only load cannot read back")


def _temp_beside(target: Path, suffix: str) -> tuple[int, Path]:
    """A fresh temp file in ``target``'s directory (so ``os.replace`` onto it is atomic).

    ``mkstemp`` creates it 0600; it is widened to 0644 because it becomes the final file, which a
    server running as another user must be able to read.
    """
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.fchmod(fd, 0o644)
    return fd, Path(name)


def save_checkpoint(path: Path, model: nn.Module, *, name: str, extra: dict | None = None) -> str:
    """Write a self-describing voxguard checkpoint atomically and return its sha256.

    The file carries the config, so it loads by path without a registry entry. ``extra`` (epoch,
    metrics, ...) must hold plain values and tensors only. The temp file lives beside the target
    so ``os.replace`` is atomic: a reader never sees a half-written checkpoint.
    """
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": VOXGUARD_FORMAT,
        "version": VOXGUARD_FORMAT_VERSION,
        "model": name,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in _own_state(model).items()},
        "extra": extra,
    }
    fd, tmp = _temp_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        sha = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("saved %s checkpoint to %s (sha256 %s)", name, path, sha)
    return sha


def fetch(
    name: str, dest_dir: Path, *, url: str | None = None, force: bool = False, progress: bool = True
) -> Path:
    """Download the published file for ``name`` into ``dest_dir`` and verify its size and sha256.

    Streams to a ``.part`` file beside the target and renames it only once verified, so an
    interrupted or wrong download never leaves a file under the official name. Skips the
    download when a verified copy is already there, unless ``force``.
    """
    spec = spec_of(name)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / spec.filename
    if target.is_file() and not force:
        if sha256_file(target) == spec.sha256:
            logger.info("%s already present and verified; skipping download", target)
            return target
        logger.warning("%s exists but does not match the published sha256; downloading again", target)
    source = url or spec.url
    fd, tmp = _temp_beside(target, ".part")
    try:
        digest, size = _download(source, fd, spec, progress)
        if size != spec.size or digest != spec.sha256:
            raise CheckpointError(
                "checksum_mismatch",
                f"Download of {source} does not match the published {spec.filename}: expected "
                f"{spec.size} bytes with sha256 {spec.sha256}, got {size} bytes with sha256 {digest}.",
                "check the URL; the published files are pinned to upstream commit " + UPSTREAM_COMMIT,
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("fetched %s to %s (sha256 %s)", name, target, spec.sha256)
    return target


def _download(source: str, fd: int, spec: CheckpointSpec, progress: bool) -> tuple[str, int]:
    """Stream ``source`` into ``fd``, hashing as it goes; stop early once it is too large to match."""
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(source, timeout=_DOWNLOAD_TIMEOUT_S) as response,
        ):
            total = int(response.headers.get("Content-Length") or spec.size)
            with progress_bar(total, spec.filename, "B", unit_scale=True, disable=not progress) as bar:
                while (chunk := response.read(_CHUNK)) and size <= spec.size:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    # URLError and HTTPError are OSErrors, bad URLs ValueErrors, a cut-off HTTP body an HTTPException.
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise CheckpointError(
            "download_failed",
            f"Could not download {spec.filename} from {source}: {exc}.",
            f"check network access, or download {spec.url} by hand into the checkpoint directory",
        ) from exc
    return digest.hexdigest(), size
