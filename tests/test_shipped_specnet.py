"""The shipped SpecNet weights: the file is the one recorded, it still computes its recorded scores, and it
keeps what the official model does well (classic TTS caught, the quiet-speech attack defeated)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from synthetic_speech import espeak_ng
from voxguard.audio.decoding import decode
from voxguard.audio.windows import make_windows
from voxguard.model.checkpoints import sha256_file
from voxguard.model.locate import BUNDLED_DIR, REGISTRY
from voxguard.pipeline import Pipeline
from voxguard.scoring import summarize
from voxguard.settings import Settings

RECORDED = json.loads((BUNDLED_DIR / "specnet.scores.json").read_text())


def test_the_shipped_file_is_the_registered_one():
    spec = REGISTRY["specnet"]
    path = BUNDLED_DIR / spec.filename
    assert spec.bundled and spec.score_offset == 0.0
    assert sha256_file(path) == spec.sha256 == RECORDED["sha256"]
    assert path.stat().st_size == spec.size == RECORDED["size"] < 10 * 2**20
    assert (BUNDLED_DIR / "MODEL_CARD.md").read_text().count(spec.sha256) >= 1


def test_it_reproduces_its_recorded_scores(detector_factory, golden, samples_dir):
    detector = detector_factory("specnet", "fast")
    margins = detector.scores(golden["inputs"])
    names = [str(n) for n in golden["row_names"]]
    np.testing.assert_allclose(margins, [RECORDED["golden_margins"][n] for n in names], atol=1e-3)
    pipeline = Pipeline(
        Settings().audio, Settings().rule.for_model(detector.info.score_offset, detector.info.score_scale)
    )
    for name, want in RECORDED["sample_fake_probability"].items():
        got = pipeline.run((samples_dir / name).read_bytes(), detector, 4).decision.fake_probability
        assert got == pytest.approx(want, abs=1e-4), name


@pytest.mark.parametrize("voice", [None, "en-gb+f3", "en-us+m3"])
def test_classic_synthetic_speech_is_fake_even_30db_quieter(detector_factory, tmp_path, voice):
    detector = detector_factory("specnet", "fast")
    audio = decode(
        espeak_ng(
            "Please call Stella and ask her to bring these things.", tmp_path / "a.wav", voice
        ).read_bytes()
    )
    for gain_db in (0, -30):
        quiet = (audio.waveform * 10 ** (gain_db / 20)).astype(np.float32)
        windows = make_windows(quiet, preprocess="robust")
        assert summarize(audio, windows, detector.scores(windows.batch)).prediction == "FAKE", gain_db


def test_the_cli_finds_the_shipped_model_without_any_weights_folder(samples_dir, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxguard.cli",
            "predict",
            "--model",
            "specnet",
            "--json",
            str(samples_dir / "voicememo.mp3"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "VOXGUARD_CHECKPOINT_DIR": str(tmp_path / "nowhere")},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    line = json.loads(run.stdout)
    assert line["model"] == "specnet"
    assert line["fake_probability"] == pytest.approx(
        RECORDED["sample_fake_probability"]["voicememo.mp3"], abs=1e-4
    )
