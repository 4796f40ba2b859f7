"""The detector recipe's reports: one fold per seed is one draw, so the seed report must show every draw;
the operating points must show each split at each threshold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from voxguard.audio.windows import WindowSet
from voxguard.evaluation import heldout

spec = importlib.util.spec_from_file_location(
    "detector_recipe", Path(__file__).resolve().parents[1] / "scripts" / "detector_recipe.py"
)
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)


def _fold(name: str, seeds: dict[int, float]) -> dict:
    return {"fold": name, "held_out": [name], "seeds": {str(s): {name: eer} for s, eer in seeds.items()}}


def test_the_main_seed_keeps_the_plain_fold_folder_so_older_runs_are_reused(tmp_path: Path) -> None:
    assert recipe.fold_folder(tmp_path, "kokoro", 1234, 1234) == tmp_path / "kokoro"
    assert recipe.fold_folder(tmp_path, "kokoro", 1235, 1234) == tmp_path / "kokoro-seed1235"


def test_the_seed_table_gives_every_seed_and_the_mean_of_the_bars_folds() -> None:
    results = [
        _fold("piper", {1: 0.10, 2: 0.30}),
        _fold("kokoro", {1: 0.20, 2: 0.40}),
        _fold("copysynth", {1: 0.30, 2: 0.50}),
    ]
    table = recipe.render_seeds(results)
    assert "| fold | held-out family | seed 1 | seed 2 | mean |" in table
    assert "| piper | piper | 10.0 % | 30.0 % | 20.0 % |" in table
    assert "| copysynth | copysynth | 30.0 % | 50.0 % | 40.0 % |" in table
    assert "seed 1 20.0 %, seed 2 40.0 %; over seeds 30.0 %." in table


def test_a_fold_without_a_seed_shows_a_gap_and_no_bar_mean_for_that_seed() -> None:
    results = [
        _fold("piper", {1: 0.10, 2: 0.30}),
        _fold("kokoro", {1: 0.20}),
        _fold("copysynth", {1: 0.30, 2: 0.50}),
    ]
    table = recipe.render_seeds(results)
    assert "| kokoro | kokoro | 20.0 % | - | 20.0 % |" in table
    assert "seed 1 20.0 %; over seeds 20.0 %." in table


def test_no_bar_mean_when_a_bar_fold_was_not_run() -> None:
    table = recipe.render_seeds([_fold("piper", {1: 0.10, 2: 0.30})])
    assert "| piper | piper | 10.0 % | 30.0 % | 20.0 % |" in table
    assert "Mean held-out EER" not in table


def _cut(label: str, family: str) -> heldout.Cut:
    windows = WindowSet(np.zeros((1, 4), np.float32), [(0.0, 4.04)], [False], [-24.0], 4.0)
    return heldout.Cut(heldout.HeldOutFile(f"{family}.flac", label, family, "original"), windows)


def test_operating_points_give_each_split_at_each_threshold_and_a_higher_one_flags_less() -> None:
    real, fake = "bonafide", "spoof"
    cuts = [_cut(real, "librispeech"), _cut(real, "fsdd"), _cut(fake, "piper"), _cut(fake, "espeak")]
    # Calibrated margins: fake probability sigmoid(-margin) = 0.27, 0.62, 0.73, 0.95.
    margins = [np.array([m]) for m in (1.0, -0.5, -1.0, -3.0)]
    points = recipe.operating_points({"dev": (cuts, margins), "test": (cuts[2:], margins[2:])})
    assert [(p["split"], p["threshold"]) for p in points] == [
        (split, t) for split in ("dev", "test") for t in recipe.THRESHOLDS
    ]
    dev = {p["threshold"]: p for p in points if p["split"] == "dev"}
    assert dev[0.5]["real_flagged"] == 0.5 and dev[0.5]["fake_caught"] == 1.0
    assert dev[0.7]["real_flagged"] == 0.0 and dev[0.7]["caught_by_family"] == {"espeak": 1.0, "piper": 1.0}
    assert dev[0.8]["caught_by_family"] == {"espeak": 1.0, "piper": 0.0}
    assert dev[0.9]["fake_caught"] == 0.5
