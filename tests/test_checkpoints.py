"""Checkpoint registry, resolution, verification, loading and fetching (no network)."""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from voxguard.model import locate
from voxguard.model.aasist import AASIST
from voxguard.model.checkpoints import fetch, load_checkpoint, save_checkpoint, sha256_file
from voxguard.model.config import VARIANTS
from voxguard.model.locate import (
    REGISTRY,
    UPSTREAM_COMMIT,
    CheckpointError,
    download_dir,
    resolve_checkpoint,
    search_dirs,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"aasist": 297_866, "aasist-l": 85_306}
# The official upstream files (the shipped specnet is tested in test_shipped_specnet.py).
OFFICIAL = sorted(name for name, spec in REGISTRY.items() if not spec.bundled)


def official_weights_dir() -> Path:
    """The real upstream weights: $VOXGUARD_CHECKPOINT_DIR, else <repo>/../shared/aasist."""
    env = os.environ.get("VOXGUARD_CHECKPOINT_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "aasist"


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    directory = official_weights_dir()
    # Fail, never skip: without the real files none of the identity checks below mean anything.
    assert all((directory / REGISTRY[name].filename).is_file() for name in OFFICIAL), (
        f"official AASIST weights not found in {directory}; set VOXGUARD_CHECKPOINT_DIR"
    )
    return directory


def raw_state(weights_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(weights_dir / REGISTRY[name].filename, map_location="cpu", weights_only=True)


def expect_error(code: str, func, *args, **kwargs) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        func(*args, **kwargs)
    assert info.value.code == code, str(info.value)
    return info.value


# --- registry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OFFICIAL)
def test_registry_matches_real_files(weights_dir: Path, name: str) -> None:
    spec = REGISTRY[name]
    file = weights_dir / spec.filename
    assert spec.name == name
    assert spec.size == file.stat().st_size
    assert spec.sha256 == sha256_file(file)
    assert spec.config == VARIANTS[name]
    assert UPSTREAM_COMMIT in spec.url and spec.url.endswith("/models/weights/" + spec.filename)
    assert "MIT" in spec.license and "NAVER" in spec.license


def test_error_str_and_pickle() -> None:
    err = CheckpointError("checkpoint_missing", "Nothing here.", "fetch it")
    assert str(err) == "Nothing here. Hint: fetch it"
    assert str(CheckpointError("checkpoint_corrupt", "Bad.")) == "Bad."
    again = pickle.loads(pickle.dumps(err))
    assert (again.code, again.detail, again.hint) == ("checkpoint_missing", "Nothing here.", "fetch it")


# --- loading the official files -------------------------------------------------------------------


@pytest.mark.parametrize("name", OFFICIAL)
def test_load_official_strict(weights_dir: Path, name: str) -> None:
    loaded = load_checkpoint(name, checkpoint_dir=weights_dir)
    spec = REGISTRY[name]
    assert isinstance(loaded.model, AASIST)
    assert not loaded.model.training and not any(m.training for m in loaded.model.modules())
    assert sum(p.numel() for p in loaded.model.parameters() if p.requires_grad) == PARAMS[name]
    assert loaded.name == name and loaded.config == spec.config
    assert loaded.path == weights_dir / spec.filename and loaded.sha256 == spec.sha256
    state = loaded.model.state_dict()
    for key, tensor in raw_state(weights_dir, name).items():
        assert state[key].device.type == "cpu"
        assert torch.equal(state[key], tensor), key


# --- resolution -----------------------------------------------------------------------------------


def test_the_lookup_rule(weights_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One rule: VOXGUARD_CHECKPOINT_DIR alone when set; else ./checkpoints, the repository's checkpoints/
    and ../shared/aasist beside it, the first that holds the file."""
    assert locate.source_checkout() == REPO_ROOT  # the tests run from the source tree
    repo, here = tmp_path / "repo", tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr(locate, "source_checkout", lambda: repo)
    monkeypatch.setenv("VOXGUARD_CHECKPOINT_DIR", str(tmp_path / "elsewhere"))
    assert search_dirs() == [tmp_path / "elsewhere"]
    monkeypatch.delenv("VOXGUARD_CHECKPOINT_DIR")
    places = [Path("checkpoints"), repo / "checkpoints", tmp_path / "shared" / "aasist"]
    assert search_dirs() == places
    err = expect_error("checkpoint_missing", resolve_checkpoint, "aasist")
    assert err.detail == (
        "Checkpoint for 'aasist' not found: no AASIST.pth in checkpoints "
        f"(relative to the current directory, {here}), {places[1]}, {places[2]}."
    )
    for place in reversed(places):  # each earlier place wins over the later ones
        (here / place).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights_dir / "AASIST.pth", here / place / "AASIST.pth")
        assert resolve_checkpoint("aasist") == place / "AASIST.pth"
    monkeypatch.setattr(locate, "source_checkout", lambda: None)  # an installed wheel: ./checkpoints only
    assert search_dirs() == [Path("checkpoints")] and download_dir() == Path("checkpoints")


def test_explicit_path_beats_dir(weights_dir: Path, tmp_path: Path) -> None:
    custom = tmp_path / "mine.pth"
    shutil.copyfile(weights_dir / "AASIST.pth", custom)
    assert resolve_checkpoint("aasist", path=custom, checkpoint_dir=weights_dir) == custom
    assert resolve_checkpoint("aasist", checkpoint_dir=weights_dir) == weights_dir / "AASIST.pth"
    assert load_checkpoint("aasist", path=str(custom), checkpoint_dir=weights_dir).path == custom


def test_env_checkpoint_dir_used(weights_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # ./checkpoints here is empty, so only the env var can succeed
    monkeypatch.setenv("VOXGUARD_CHECKPOINT_DIR", str(weights_dir))
    assert resolve_checkpoint("aasist-l") == weights_dir / "AASIST-L.pth"
    assert load_checkpoint("aasist-l").sha256 == REGISTRY["aasist-l"].sha256


def test_missing_file_names_path_and_hint(tmp_path: Path) -> None:
    err = expect_error("checkpoint_missing", load_checkpoint, "aasist-l", checkpoint_dir=tmp_path)
    assert str(tmp_path / "AASIST-L.pth") in err.detail
    for text in (
        "make weights",
        "voxguard weights --model aasist-l",
        "VOXGUARD_CHECKPOINT_DIR",
        "--checkpoint",
    ):
        assert text in err.hint
    assert "Hint:" in str(err)
    err = expect_error("checkpoint_missing", resolve_checkpoint, "aasist", path=tmp_path / "nope.pth")
    assert str(tmp_path / "nope.pth") in err.detail
    expect_error("checkpoint_missing", resolve_checkpoint, "aasist", path=tmp_path)  # a directory


def test_unknown_model_lists_known_names(weights_dir: Path, tmp_path: Path) -> None:
    for call in (
        lambda: load_checkpoint("rawnet2", checkpoint_dir=weights_dir),
        lambda: load_checkpoint("rawnet2", path=weights_dir / "AASIST.pth"),  # plain state_dict needs a name
        lambda: fetch("rawnet2", tmp_path, progress=False),
    ):
        with pytest.raises(CheckpointError) as info:
            call()
        assert info.value.code == "unknown_model"
        assert "aasist" in info.value.detail and "aasist-l" in info.value.detail


# --- verification ---------------------------------------------------------------------------------


def test_checksum_mismatch_in_dir(
    weights_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = raw_state(weights_dir, "aasist")
    state["out_layer.bias"] = state["out_layer.bias"] + 1.0
    tampered = tmp_path / "AASIST.pth"
    torch.save(state, tampered)
    got = sha256_file(tampered)

    err = expect_error("checksum_mismatch", load_checkpoint, "aasist", checkpoint_dir=tmp_path)
    assert REGISTRY["aasist"].sha256 in err.detail and got in err.detail
    assert "make weights" in err.hint

    # verify=False, or naming the file explicitly, accepts it but says it is not the published file.
    for kwargs in ({"checkpoint_dir": tmp_path, "verify": False}, {"path": tampered}):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="voxguard.model.checkpoints"):
            loaded = load_checkpoint("aasist", **kwargs)
        assert loaded.sha256 == got
        assert torch.equal(loaded.model.out_layer.bias, state["out_layer.bias"])
        assert any("not the published" in r.getMessage() for r in caplog.records)


def _write_random(path: Path, weights_dir: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _write_truncated(path: Path, weights_dir: Path) -> None:
    data = (weights_dir / "AASIST.pth").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_int_list(path: Path, weights_dir: Path) -> None:
    torch.save([1, 2, 3], path)


def _write_dict_without_tensors(path: Path, weights_dir: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, path)


class _Opaque:
    """Stands for any pickled object that is not tensors and plain containers."""


def _write_pickled_object(path: Path, weights_dir: Path) -> None:
    torch.save({"weights": _Opaque()}, path)


def _write_empty(path: Path, weights_dir: Path) -> None:
    path.write_bytes(b"")


def _write_bad_voxguard_config(path: Path, weights_dir: Path) -> None:
    torch.save(
        {"format": "voxguard-checkpoint", "version": 1, "model": "x", "config": {}, "state_dict": {}}, path
    )


def _write_future_version(path: Path, weights_dir: Path) -> None:
    torch.save({"format": "voxguard-checkpoint", "version": 99}, path)


@pytest.mark.parametrize(
    "writer",
    [
        _write_random,
        _write_truncated,
        _write_int_list,
        _write_dict_without_tensors,
        _write_pickled_object,
        _write_empty,
        _write_bad_voxguard_config,
        _write_future_version,
    ],
)
def test_corrupt_files(weights_dir: Path, tmp_path: Path, writer) -> None:
    bad = tmp_path / "broken.pth"
    writer(bad, weights_dir)
    err = expect_error("checkpoint_corrupt", load_checkpoint, "aasist", path=bad)
    assert str(bad) in err.detail
    assert "\n" not in err.detail  # one readable line, not torch's multi-paragraph message


# --- key and shape mismatches ---------------------------------------------------------------------


def test_wrong_variant_names_key_and_shapes(weights_dir: Path) -> None:
    small = raw_state(weights_dir, "aasist-l")
    expected = AASIST(VARIANTS["aasist"]).state_dict()
    first = next(k for k, v in expected.items() if v.shape != small[k].shape)
    err = expect_error("checkpoint_mismatch", load_checkpoint, "aasist", path=weights_dir / "AASIST-L.pth")
    assert repr(first) in err.detail
    assert str(tuple(small[first].shape)) in err.detail
    assert str(tuple(expected[first].shape)) in err.detail


def test_missing_and_unexpected_keys_named(weights_dir: Path, tmp_path: Path) -> None:
    state = raw_state(weights_dir, "aasist")
    del state["HtrgGAT_layer_ST11.att_weight11"]
    file = tmp_path / "short.pth"
    torch.save(state, file)
    err = expect_error("checkpoint_mismatch", load_checkpoint, "aasist", path=file)
    assert "'HtrgGAT_layer_ST11.att_weight11'" in err.detail and "missing" in err.detail

    state = raw_state(weights_dir, "aasist")
    state["bogus.weight"] = torch.zeros(3)
    torch.save(state, file)
    err = expect_error("checkpoint_mismatch", load_checkpoint, "aasist", path=file)
    assert "'bogus.weight'" in err.detail and "unexpected" in err.detail


# --- voxguard's own format ------------------------------------------------------------------------


def test_voxguard_round_trip(weights_dir: Path, tmp_path: Path) -> None:
    model = load_checkpoint("aasist", checkpoint_dir=weights_dir).model
    with torch.no_grad():
        model.out_layer.weight[0, 0] += 0.5
    file = tmp_path / "runs" / "trained.pt"
    sha = save_checkpoint(file, model, name="aasist-ft", extra={"epoch": 7, "eer": 0.01, "tags": ["a"]})
    assert sha == sha256_file(file)
    assert sorted(p.name for p in file.parent.iterdir()) == ["trained.pt"]  # no temp file left
    assert file.stat().st_mode & 0o044 == 0o044

    raw = torch.load(file, map_location="cpu", weights_only=True)
    assert raw["format"] == "voxguard-checkpoint" and raw["version"] == 1 and raw["model"] == "aasist-ft"
    assert raw["extra"] == {"epoch": 7, "eer": 0.01, "tags": ["a"]}

    loaded = load_checkpoint("aasist", path=file)
    assert loaded.name == "aasist-ft" and loaded.sha256 == sha and loaded.config == VARIANTS["aasist"]
    assert not loaded.model.training
    want = model.state_dict()
    got = loaded.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_voxguard_config_comes_from_file(weights_dir: Path, tmp_path: Path) -> None:
    small = load_checkpoint("aasist-l", checkpoint_dir=weights_dir).model
    file = tmp_path / "small.pt"
    save_checkpoint(file, small, name="my-small")
    # The requested name (even an unknown one) does not override the config stored in the file.
    for requested in ("aasist", "my-small"):
        loaded = load_checkpoint(requested, path=file)
        assert loaded.config == VARIANTS["aasist-l"]
        assert sum(p.numel() for p in loaded.model.parameters()) == PARAMS["aasist-l"]


def test_voxguard_file_in_dir_still_verified(weights_dir: Path, tmp_path: Path) -> None:
    save_checkpoint(
        tmp_path / "AASIST.pth", load_checkpoint("aasist", checkpoint_dir=weights_dir).model, name="x"
    )
    expect_error("checksum_mismatch", load_checkpoint, "aasist", checkpoint_dir=tmp_path)


def test_save_rejects_unloadable_extra(weights_dir: Path, tmp_path: Path) -> None:
    model = AASIST(VARIANTS["aasist-l"])
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "x.pt", model, name="x", extra={"when": object()})
    assert list(tmp_path.iterdir()) == []


# --- fetch (file:// URLs only) --------------------------------------------------------------------


def test_fetch_file_url(weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "w"
    path = fetch("aasist-l", dest, url=(weights_dir / "AASIST-L.pth").as_uri(), progress=True)
    assert path == dest / "AASIST-L.pth"
    assert sha256_file(path) == REGISTRY["aasist-l"].sha256
    assert sorted(p.name for p in dest.iterdir()) == ["AASIST-L.pth"]  # no .part left
    assert path.stat().st_mode & 0o044 == 0o044  # readable by a server running as another user
    assert "AASIST-L.pth" in capsys.readouterr().err  # tqdm progress goes to stderr


def test_fetch_skips_verified_copy(weights_dir: Path, tmp_path: Path) -> None:
    shutil.copyfile(weights_dir / "AASIST.pth", tmp_path / "AASIST.pth")
    unreachable = (tmp_path / "does-not-exist.pth").as_uri()
    assert fetch("aasist", tmp_path, url=unreachable, progress=False) == tmp_path / "AASIST.pth"
    expect_error("download_failed", fetch, "aasist", tmp_path, url=unreachable, force=True, progress=False)
    assert sha256_file(tmp_path / "AASIST.pth") == REGISTRY["aasist"].sha256  # untouched by the failure


def test_fetch_replaces_bad_copy(weights_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "AASIST.pth").write_bytes(b"stale")
    fetch("aasist", tmp_path, url=(weights_dir / "AASIST.pth").as_uri(), progress=False)
    assert sha256_file(tmp_path / "AASIST.pth") == REGISTRY["aasist"].sha256


def test_fetch_wrong_file_size(weights_dir: Path, tmp_path: Path) -> None:
    err = expect_error(
        "checksum_mismatch",
        fetch,
        "aasist",
        tmp_path,
        url=(weights_dir / "AASIST-L.pth").as_uri(),
        progress=False,
    )
    assert str(REGISTRY["aasist"].size) in err.detail
    assert list(tmp_path.iterdir()) == []


def test_fetch_wrong_sha(weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(REGISTRY["aasist"], sha256="0" * 64)  # right size, wrong hash
    monkeypatch.setitem(REGISTRY, "aasist", spec)
    err = expect_error(
        "checksum_mismatch",
        fetch,
        "aasist",
        tmp_path,
        url=(weights_dir / "AASIST.pth").as_uri(),
        progress=False,
    )
    assert "0" * 64 in err.detail and sha256_file(weights_dir / "AASIST.pth") in err.detail
    assert list(tmp_path.iterdir()) == []


def test_fetch_download_failed_names_url(tmp_path: Path) -> None:
    url = (tmp_path / "missing" / "AASIST.pth").as_uri()
    err = expect_error("download_failed", fetch, "aasist", tmp_path / "dest", url=url, progress=False)
    assert url in err.detail
    assert not any(p.name.endswith(".part") for p in (tmp_path / "dest").iterdir())
    assert re.search(r"https://github\.com/clovaai/aasist/raw/[0-9a-f]{40}/", err.hint)
