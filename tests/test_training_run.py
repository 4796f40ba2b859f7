"""Runs of the training loop on a tiny data set: seeding, exact resume, run files, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training_data import write_csv_set, write_folder_set
from voxguard.model.aasist import AASIST
from voxguard.model.checkpoints import load_checkpoint, save_checkpoint, sha256_file
from voxguard.model.config import VARIANTS
from voxguard.training import TrainingError
from voxguard.training.recipe import Recipe, make_optimizer
from voxguard.training.run_files import (
    RunFiles,
    optimizer_state_from_plain,
    optimizer_state_to_plain,
    read_metrics,
    read_steps,
)
from voxguard.training.swa import WeightAverage
from voxguard.training.trainer import RunSummary, Runtime, resolve_precision, train

TIMING = {"train_seconds", "seconds_per_step", "seconds"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Recipe:
    """Four training clips and two dev clips; AASIST-L from scratch, two epochs of two steps."""
    root = tmp_path_factory.mktemp("tiny")
    train_dir, dev_csv = write_folder_set(root / "train", 2, seed=1), write_csv_set(root / "dev", 1, seed=2)
    return Recipe(
        train=str(train_dir), dev=str(dev_csv), model="aasist-l", name="tiny", epochs=2, batch_size=2, seed=7
    )


def run(recipe: Recipe, out: Path, **runtime: object) -> RunSummary:
    return train(recipe, Runtime(out=out, device="cpu", progress=False, **runtime))


@pytest.fixture(scope="module")
def whole(tiny: Recipe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    summary = run(tiny, out)
    assert (summary.epochs_done, summary.complete) == (2, True)
    return out


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_run(tiny: Recipe, whole: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    first = run(tiny, out, stop_after=1)
    assert (first.epochs_done, first.complete) == (1, False)
    # A fresh run with the same seed repeats the same trajectory (CPU, same thread count).
    assert read_steps(out / "steps.csv") == read_steps(whole / "steps.csv")[:2]
    rest = run(tiny, out, resume=True)
    assert (rest.epochs_done, rest.complete) == (2, True)

    steps = read_steps(out / "steps.csv")
    assert steps == read_steps(whole / "steps.csv")  # same loss and learning rate at every step
    assert [(s.step, s.epoch) for s in steps] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    metrics = read_metrics(out / "metrics.jsonl")
    assert _without_timing(metrics) == _without_timing(read_metrics(whole / "metrics.jsonl"))
    # Weights, optimiser moments, schedule position, RNG state, metrics: everything in both checkpoints.
    # (Not the bytes: torch.save writes a fresh serialization id into every file.)
    for name in ("best.pt", "last.pt", "swa.pt"):
        a = torch.load(whole / name, map_location="cpu", weights_only=True)
        b = torch.load(out / name, map_location="cpu", weights_only=True)
        assert_same(a, b, name)
    assert rest.last_sha256 == sha256_file(out / "last.pt")


def assert_same(a: object, b: object, where: str) -> None:
    """Deep equality of checkpoint contents, tensors compared exactly."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_another_seed_gives_another_trajectory(tiny: Recipe, whole: Path, tmp_path: Path) -> None:
    other = Recipe.from_dict({**tiny.to_dict(), "seed": 8})
    run(other, tmp_path / "other", stop_after=1)
    losses = [s.loss for s in read_steps(tmp_path / "other" / "steps.csv")]
    assert losses != [s.loss for s in read_steps(whole / "steps.csv")[:2]]


@pytest.mark.slow
def test_run_files_record_metrics_checkpoints_and_hashes(whole: Path) -> None:
    baseline, *metrics = read_metrics(whole / "metrics.jsonl")
    # Epoch 0 is the untrained model on the dev set, at the schedule's start.
    assert (baseline["epoch"], baseline["step"], baseline["lr"]) == (0, 0, pytest.approx(1e-4))
    assert "train_loss" not in baseline and 0.0 <= baseline["dev_eer"] <= 1.0
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert 0.0 <= m["dev_eer"] <= 1.0 and m["dev_loss"] > 0 and m["train_loss"] > 0
    assert metrics[0]["lr"] < 1e-4 and metrics[-1]["lr"] == pytest.approx(5e-6)  # the schedule's floor
    steps = read_steps(whole / "steps.csv")
    assert steps[0].lr == pytest.approx(1e-4) and len(steps) == 4

    best = min(metrics, key=lambda m: (m["dev_eer"], m["dev_loss"]))  # epoch 0 is not a candidate
    assert metrics[-1]["best_epoch"] == best["epoch"]
    assert metrics[-1]["best_sha256"] == sha256_file(whole / "best.pt")
    saved = torch.load(whole / "best.pt", map_location="cpu", weights_only=True)
    assert saved["model"] == "tiny" and saved["config"] == VARIANTS["aasist-l"].to_dict()
    assert saved["extra"]["training"]["epoch"] == best["epoch"]
    assert saved["extra"]["training"]["dev_eer"] == best["dev_eer"]
    assert saved["extra"]["training"]["recipe"]["seed"] == 7
    assert "resume" not in saved["extra"]  # best.pt is a model, not a training state

    last = torch.load(whole / "last.pt", map_location="cpu", weights_only=True)["extra"]
    assert last["training"]["epoch"] == 2 and last["training"]["step"] == 4
    assert set(last["resume"]) == {"optimizer", "scheduler", "scaler", "rng", "best", "swa"}
    assert last["resume"]["scheduler"]["last_epoch"] == 4

    info = json.loads((whole / "run.json").read_text())
    assert info["complete"] and info["epochs_done"] == 2 and info["total_steps"] == 4
    assert info["last"]["sha256"] == sha256_file(whole / "last.pt")
    assert info["best"]["sha256"] == sha256_file(whole / "best.pt") and info["best"]["epoch"] == best["epoch"]
    assert info["data"]["train"] == {
        "name": "train",
        "layout": "folder",
        "items": 4,
        "bonafide": 2,
        "spoof": 2,
    }
    assert info["init"] == {"source": "scratch"}
    loaded = load_checkpoint("aasist", path=whole / "best.pt")  # serve/predict's loader, whatever name asked
    assert loaded.name == "tiny" and loaded.config == VARIANTS["aasist-l"]


def test_weight_average_is_the_mean_and_survives_a_checkpoint(tmp_path: Path) -> None:
    models = [AASIST(VARIANTS["aasist-l"]) for _ in range(3)]
    average = WeightAverage()
    for epoch, model in zip((2, 5, 9), models, strict=True):
        average.add(model, epoch)
    save_checkpoint(tmp_path / "x.pt", models[0], name="x", extra={"swa": average.to_dict()})
    back = WeightAverage.from_dict(torch.load(tmp_path / "x.pt", weights_only=True)["extra"]["swa"])
    assert back.epochs == [2, 5, 9] and WeightAverage.from_dict(None).epochs == []
    averaged = back.averaged(models[0])
    for name, value in averaged.named_parameters():
        mean = torch.stack([dict(m.named_parameters())[name].detach() for m in models]).mean(0)
        torch.testing.assert_close(value.detach(), mean, rtol=0, atol=1e-6)
    for name, value in averaged.named_buffers():  # buffers are the model's, to be recomputed
        assert torch.equal(value, dict(models[0].named_buffers())[name])


@pytest.mark.slow
def test_swa_pt_averages_the_improving_epochs_with_fresh_batch_norm(tmp_path: Path) -> None:
    """One epoch per invocation, keeping each best.pt: swa.pt's parameters are the mean of the snapshots
    of the epochs that improved, and its batch-norm statistics were recomputed, not copied."""
    # A set on which both epochs improve the dev result (seeded, on the CPU with 2 threads).
    train_dir = write_folder_set(tmp_path / "train", 3, seed=1)
    dev_csv = write_csv_set(tmp_path / "dev", 2, seed=2)
    recipe = Recipe(
        train=str(train_dir), dev=str(dev_csv), model="aasist-l", name="tiny", epochs=2, batch_size=2, seed=7,
        lr=3e-4,
    )  # fmt: skip
    out, snapshots = tmp_path / "run", {}
    for _ in range(recipe.epochs):
        summary = run(recipe, out, stop_after=1, resume=out.exists(), threads=2)
        saved = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
        snapshots[saved["extra"]["training"]["epoch"]] = saved["state_dict"]
        assert (summary.swa is None) == (not summary.complete)
    improved = [m["epoch"] for m in read_metrics(out / "metrics.jsonl")[1:] if m["improved"]]
    assert summary.swa.epochs == improved == sorted(snapshots) and len(improved) >= 2
    swa = torch.load(out / "swa.pt", map_location="cpu", weights_only=True)
    assert swa["extra"]["training"]["swa_epochs"] == improved
    assert swa["extra"]["training"]["dev_eer"] == summary.swa.dev_eer
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state_dict"]
    model = AASIST(VARIANTS["aasist-l"])
    parameters, fresh = {name for name, _ in model.named_parameters()}, model.state_dict()
    for name, value in swa["state_dict"].items():
        if name in parameters:
            mean = torch.stack([snapshots[e][name] for e in improved]).mean(0)
            torch.testing.assert_close(value, mean, rtol=0, atol=1e-6)
        elif name.endswith(("running_mean", "running_var")):
            # Recomputed, so unlike last.pt's, except in a batch norm the forward never uses.
            unused = torch.equal(last[name], fresh[name])
            assert torch.equal(value, last[name]) == unused, name
    info = json.loads((out / "run.json").read_text())
    assert info["swa"]["sha256"] == sha256_file(out / "swa.pt") == summary.swa.sha256
    assert info["swa"]["epochs"] == improved and 0.0 <= info["swa"]["dev_eer"] <= 1.0
    loaded = load_checkpoint("aasist", path=out / "swa.pt")  # serves like best.pt
    assert loaded.name == "tiny" and loaded.config == VARIANTS["aasist-l"]

    # Stopped between last.pt and swa.pt: resuming the complete run writes the missing swa.pt.
    (out / "swa.pt").unlink()
    again = run(recipe, out, resume=True, threads=2)
    assert again.swa is not None and sha256_file(out / "swa.pt") == again.swa.sha256
    torch.testing.assert_close(
        torch.load(out / "swa.pt", map_location="cpu", weights_only=True)["state_dict"],
        swa["state_dict"],
        rtol=0,
        atol=0,
    )


@pytest.mark.slow
def test_no_swa_writes_no_swa_pt(tiny: Recipe, tmp_path: Path) -> None:
    summary = run(Recipe.from_dict({**tiny.to_dict(), "swa": False, "epochs": 1}), tmp_path / "run")
    assert summary.complete and summary.swa is None
    assert not (tmp_path / "run" / "swa.pt").exists()
    assert "swa" not in json.loads((tmp_path / "run" / "run.json").read_text())


@pytest.mark.slow
def test_resuming_a_complete_run_changes_nothing(tiny: Recipe, whole: Path) -> None:
    before = {p.name: p.read_bytes() for p in whole.iterdir()}
    summary = run(tiny, whole, resume=True)
    assert summary.complete and summary.epochs_done == 2
    assert {p.name: p.read_bytes() for p in whole.iterdir()} == before


@pytest.mark.slow
def test_refusals(tiny: Recipe, whole: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"epochs: 3 != 2"):
        run(Recipe.from_dict({**tiny.to_dict(), "epochs": 3}), whole, resume=True)
    with pytest.raises(TrainingError, match="already holds a run"):
        run(tiny, whole)
    with pytest.raises(TrainingError, match="Nothing to resume"):
        run(tiny, tmp_path / "empty", resume=True)
    with pytest.raises(TrainingError, match="less than one batch"):
        run(Recipe.from_dict({**tiny.to_dict(), "batch_size": 5}), tmp_path / "big")
    with pytest.raises(TrainingError, match="holds a aasist-l model, not aasist"):
        run(
            Recipe.from_dict({**tiny.to_dict(), "init": str(whole / "best.pt"), "model": "aasist"}),
            tmp_path / "x",
        )


def test_precision_needs_cuda_for_mixed_precision() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None and resolve_precision("fp32", cpu) is None
    for precision in ("bf16", "fp16"):
        with pytest.raises(TrainingError, match="needs a CUDA device"):
            resolve_precision(precision, cpu)


def test_optimizer_state_survives_a_weights_only_checkpoint(tmp_path: Path) -> None:
    model = AASIST(VARIANTS["aasist-l"])
    optimizer, scheduler = make_optimizer(model, Recipe(train="t", dev="d"), steps_per_epoch=3)
    for p in model.parameters():  # any gradient gives Adam its per-parameter state; no forward needed
        p.grad = torch.full_like(p, 0.01)
    optimizer.step()
    scheduler.step()
    extra = {
        "resume": {
            "optimizer": optimizer_state_to_plain(optimizer.state_dict()),
            "scheduler": scheduler.state_dict(),
        }
    }
    save_checkpoint(tmp_path / "x.pt", model, name="x", extra=extra)
    back = torch.load(tmp_path / "x.pt", map_location="cpu", weights_only=True)["extra"]["resume"]
    fresh, fresh_scheduler = make_optimizer(AASIST(VARIANTS["aasist-l"]), Recipe(train="t", dev="d"), 3)
    fresh.load_state_dict(optimizer_state_from_plain(back["optimizer"]))
    fresh_scheduler.load_state_dict(back["scheduler"])
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    for key, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(value, fresh.state_dict()["state"][key][name])


def test_a_run_that_died_before_its_first_checkpoint_starts_over(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n')
    (tmp_path / "steps.csv").write_text("step,epoch,lr,loss\n1,1,0.0001,0.7\n")
    files = RunFiles(tmp_path)
    files.start_new()
    assert read_metrics(tmp_path / "metrics.jsonl") == [] and read_steps(tmp_path / "steps.csv") == []
    (tmp_path / "best.pt").write_bytes(b"x")
    with pytest.raises(TrainingError, match=r"already holds a run \(best\.pt\)"):
        files.start_new()
