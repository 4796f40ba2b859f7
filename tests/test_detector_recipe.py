"""The detector recipe's seed report: one fold per seed is one draw, so the report must show every draw."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
