"""The official recipe: Adam settings, the per-step cosine schedule's end points, the class weights."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from voxguard.model.aasist import AASIST
from voxguard.model.config import VARIANTS
from voxguard.training.recipe import CosineSchedule, Recipe, make_criterion, make_optimizer

RECIPE = Recipe(train="t", dev="d")


def test_defaults_are_the_official_config() -> None:
    assert (RECIPE.epochs, RECIPE.batch_size, RECIPE.lr, RECIPE.lr_min) == (100, 24, 1e-4, 5e-6)
    assert (RECIPE.betas, RECIPE.weight_decay, RECIPE.seed) == ((0.9, 0.999), 1e-4, 1234)
    assert (RECIPE.spoof_weight, RECIPE.bonafide_weight) == (0.1, 0.9)
    optimizer, _ = make_optimizer(AASIST(VARIANTS["aasist-l"]), RECIPE, steps_per_epoch=10)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.Adam)
    assert (group["lr"], group["betas"], group["weight_decay"], group["amsgrad"]) == (
        1e-4,
        (0.9, 0.999),
        1e-4,
        False,
    )


def test_schedule_runs_from_lr_to_lr_min_over_every_step_of_the_run() -> None:
    recipe = Recipe(train="t", dev="d", epochs=3)
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = make_optimizer(model, recipe, steps_per_epoch=4)
    seen = []
    for _ in range(12):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(1e-4, rel=1e-12)
    assert seen[6] == pytest.approx((1e-4 + 5e-6) / 2, rel=1e-12)  # half-way down the cosine
    assert all(a > b for a, b in itertools.pairwise(seen))
    assert scheduler.get_last_lr()[0] == pytest.approx(5e-6, rel=1e-12)  # after the last step
    assert seen[-1] == pytest.approx(5e-6 + (1e-4 - 5e-6) * 0.5 * (1 + math.cos(math.pi * 11 / 12)))


def test_cosine_factor_end_points() -> None:
    schedule = CosineSchedule(total_steps=100, floor=0.05)
    assert (
        schedule(0) == 1.0 and schedule(100) == pytest.approx(0.05) and schedule(50) == pytest.approx(0.525)
    )


def test_loss_weights_bona_fide_nine_times_spoof() -> None:
    criterion = make_criterion(RECIPE, torch.device("cpu"))
    assert criterion.weight.tolist() == pytest.approx([0.1, 0.9])  # logit 0 spoof, logit 1 bona fide
    # Equal, undecided outputs for a spoof (label 0) and a bona fide (label 1) example: the bona fide
    # one pulls 9x harder (the weights swapped would give 1/9).
    logits = torch.zeros(2, 2, requires_grad=True)
    criterion(logits, torch.tensor([0, 1])).backward()
    assert (logits.grad[1].abs().sum() / logits.grad[0].abs().sum()).item() == pytest.approx(9.0)


def test_recipe_round_trips_and_names_differences() -> None:
    recipe = Recipe(train="/a", dev="/b", model="aasist-l", augment=("gain", "codec"), epochs=3)
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    other = Recipe(train="/a", dev="/b", model="aasist-l", augment=("gain", "codec"), epochs=4, lr=2e-4)
    assert recipe.differences(other) == ["epochs: 3 != 4", "lr: 0.0001 != 0.0002"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "rawnet"}, "model"),
        ({"epochs": 0}, "epochs"),
        ({"lr_min": 1e-3}, "lr_min"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_recipes_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Recipe(train="t", dev="d", **change)
