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
from voxguard.model.localizer import (
    WEIGHTS,
    WEIGHTS_SHA256,
    Localizer,
    LocalizerSpec,
    LocEnsemble,
    frame_labels,
)
from voxguard.training import localizer as recipe
from voxguard.training.localizer import edge_fit

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


def test_the_bar_is_the_issues():
    """One bar for the placement choice and the edge study: 90 % covered, edges within 1 s, at most
    2.5 s of real speech marked either side."""
    stretch = (10.0, 15.0)
    assert edge_fit(stretch, [(9.5, 15.5)]).ok
    assert edge_fit(stretch, [(9.0, 16.0)]).ok  # exactly 1 s out at both ends
    assert not edge_fit(stretch, [(8.0, 15.0)]).ok  # starts 2 s early
    assert not edge_fit(stretch, [(10.0, 13.0)]).ok  # covers 60 %
    assert not edge_fit(stretch, [(10.0, 15.0), (2.0, 5.0)]).ok  # 3 s of real speech marked before
    assert edge_fit(stretch, [(10.0, 15.0), (2.0, 5.0)], [(2.0, 5.0)]).ok  # that one is another stretch's
    missed = edge_fit(stretch, [(20.0, 21.0)])
    assert missed.coverage == 0 and np.isnan(missed.start) and not missed.ok
    split = edge_fit(stretch, [(9.8, 12.0), (12.7, 15.2)])  # a 0.7 s hole: 86 % covered
    assert split.coverage == pytest.approx(0.86) and not split.ok


def test_real_speech_is_one_recording_or_pieces_of_several(monkeypatch):
    """A member's share of examples has real speech that changes recording mid-file, so a change of source
    is not a cue for synthetic speech; each piece comes from a different recording."""
    monkeypatch.setattr(recipe, "_source", lambda audio, rng: audio)
    recordings = [np.full(5 * 16_000, i + 1, np.float32) for i in range(6)]
    pools = recipe.Pools(real=recordings, synthetic={})
    pieces = []
    for seed in range(40):
        audio, mixed = recipe._real(pools, np.random.default_rng(seed), 8 * 16_000, 0.5)
        assert len(audio) == 8 * 16_000
        changes = np.flatnonzero(np.diff(audio)) + 1
        values = audio[np.concatenate([[0], changes])]
        assert mixed == (len(values) > 1)
        assert len(set(values.tolist())) == len(values)
        pieces.append(len(values))
    assert pieces.count(1) in range(10, 31) and max(pieces) in (3, 4)
    single = [recipe._real(pools, np.random.default_rng(seed), 8 * 16_000, 0.0) for seed in range(10)]
    assert not any(mixed for _, mixed in single)
    assert all(len(np.unique(audio)) == 1 for audio, _ in single)


def test_a_source_channel_keeps_the_length():
    x = np.random.default_rng(0).standard_normal(3 * 16_000).astype(np.float32) * 0.1
    for seed in range(12):
        y = recipe._source(x, np.random.default_rng(seed))
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()


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
    assert isinstance(localizer.net, LocEnsemble) and localizer.placement == report["placement"]
    saved = torch.load(out / "localizer.pt", weights_only=True)
    assert saved["provenance"]["examples"] == 8
