"""The segment localizer: its recipe runs end to end on a tiny set, its weights load only as published,
and the placement it ships is the one its recipe picked on dev examples."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from voxguard import edges
from voxguard.audio import options
from voxguard.model import localizer as localizer_module
from voxguard.model.localizer import WEIGHTS, WEIGHTS_SHA256, Localizer, LocalizerSpec, LocNet, frame_labels
from voxguard.training.localizer import _meets_bar

RECIPE = Path(__file__).resolve().parents[1] / "scripts" / "localizer_recipe.py"


def test_the_shipped_weights_are_the_published_file():
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == WEIGHTS_SHA256
    assert WEIGHTS.stat().st_size < 10 * 1024 * 1024
    localizer = Localizer.load()
    edges.Placement(**localizer.placement)  # every number the placement needs, and no other
    assert localizer.fake_frames(np.zeros(16_000, np.float32)).shape == (50,)


def test_the_localizer_hears_audio_at_the_rate_it_is_decoded_to():
    assert localizer_module.SAMPLE_RATE == options.SAMPLE_RATE
    assert localizer_module.FRAME_S * options.SAMPLE_RATE == 2 * localizer_module._HOP


def test_frame_labels_are_the_synthetic_share_of_each_20_ms_frame():
    mask = np.zeros(16_000, np.float32)
    mask[480:960] = 1.0  # 30-60 ms: half of frame 1 (20-40 ms), all of frame 2
    labels = frame_labels(mask, 4)
    assert labels.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0])


def test_the_bar_of_the_placement_choice_is_the_issues():
    second = 50  # frames
    stretch = (10 * second, 15 * second)
    assert _meets_bar(stretch, [(int(9.5 * second), int(15.5 * second))], [stretch])
    assert not _meets_bar(stretch, [(8 * second, 15 * second)], [stretch])  # starts 2 s early
    assert not _meets_bar(stretch, [(10 * second, 13 * second)], [stretch])  # covers 60 %
    far = [(10 * second, 15 * second), (2 * second, 5 * second)]  # 3 s of real speech marked before
    assert not _meets_bar(stretch, far, [stretch])


@pytest.mark.slow
def test_the_recipe_trains_and_ships_a_loadable_localizer(tmp_path, samples_dir):
    """A few clips of espeak-ng and LPC copies, a few steps: the recipe's whole path, in seconds."""
    out = tmp_path / "localizer"
    tiny = ["--tiny", "--examples", "8", "--dev-examples", "4", "--steps", "3"]
    proc = subprocess.run(
        [sys.executable, str(RECIPE), "--shared", str(samples_dir.parent), "--out", str(out), *tiny],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["sha256"] == hashlib.sha256((out / "localizer.pt").read_bytes()).hexdigest()
    picked = [p for p in report["placements"] if all(p[k] == v for k, v in report["placement"].items())]
    assert len(picked) == 1 and len(report["placements"]) > 1
    assert set(report["held_out_speakers"]) and len(report["held_out_sentences"]) == 5
    localizer = Localizer.load(LocalizerSpec(out / "localizer.pt", report["sha256"]))
    assert isinstance(localizer.net, LocNet) and localizer.placement == report["placement"]
    saved = torch.load(out / "localizer.pt", weights_only=True)
    assert saved["provenance"]["examples"] == 8
