"""Training on the test device (``VOXGUARD_TEST_DEVICE``, default cpu).

On CPU this trains and resumes in float32. With ``VOXGUARD_TEST_DEVICE=cuda`` it runs every precision
the trainer offers there: float32, bfloat16 autocast, and float16 autocast with a gradient scaler (whose
state must survive a resume), on the full AASIST at the official batch size of 24.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training_data import write_csv_set, write_folder_set
from voxguard.inference import Detector
from voxguard.model.checkpoints import load_checkpoint
from voxguard.training.recipe import Recipe
from voxguard.training.run_files import read_metrics, read_steps
from voxguard.training.trainer import Runtime, train


@pytest.mark.slow
def test_train_and_resume_in_each_precision_of_the_device(device: torch.device, tmp_path: Path) -> None:
    cuda = device.type == "cuda"
    precisions = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"} if cuda else {"fp32": "float32"}
    per_class, batch = (48, 24) if cuda else (1, 2)  # CUDA: 4 steps per epoch at the official batch
    recipe = Recipe(
        train=str(write_folder_set(tmp_path / "train", per_class, seed=1)),
        dev=str(write_csv_set(tmp_path / "dev", 8 if cuda else 1, seed=2)),
        model="aasist" if cuda else "aasist-l",
        name="device-check",
        epochs=2,
        batch_size=batch,
        seed=3,
    )
    first_loss = {}
    for precision, dtype in precisions.items():
        out = tmp_path / precision
        settings = {"device": str(device), "precision": precision, "progress": False}
        assert not train(recipe, Runtime(out=out, stop_after=1, **settings)).complete
        assert train(recipe, Runtime(out=out, resume=True, **settings)).complete

        steps = read_steps(out / "steps.csv")
        assert len(steps) == 2 * (2 * per_class // batch)
        assert all(np.isfinite(s.loss) for s in steps)
        assert [m["epoch"] for m in read_metrics(out / "metrics.jsonl")] == [0, 1, 2]
        environment = json.loads((out / "run.json").read_text())["environment"]
        assert (environment["device"], environment["precision"]) == (str(device), dtype)
        scaler = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["extra"]["resume"][
            "scaler"
        ]
        assert bool(scaler) == (precision == "fp16")  # only float16 needs (and saves) loss scaling
        if scaler:
            assert scaler["scale"] > 0

        window = (np.random.default_rng(0).standard_normal((2, 64600)) * 0.05).astype(np.float32)
        for checkpoint in ("best.pt", "swa.pt"):  # swa.pt: averaged, batch norm recomputed on the device
            loaded = load_checkpoint("aasist", path=out / checkpoint)
            detector = Detector(loaded, engine="eager", device=str(device))
            assert np.all(np.isfinite(detector.scores(window))), checkpoint
        first_loss[precision] = steps[0].loss
    # Same initial weights, same first batch, same dropout: autocast changes rounding, not the result.
    for precision, loss in first_loss.items():
        assert loss == pytest.approx(first_loss["fp32"], rel=0.1, abs=0.02), (precision, first_loss)
