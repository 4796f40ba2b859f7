"""The shipped weights (SpecNet, and SpecNet with the Whisper head): each file is the one recorded, it
still computes its recorded scores, and it keeps what the official model does well (classic TTS caught,
the quiet-speech attack defeated)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from servers import live_server
from synthetic_speech import espeak_ng
from voxguard.audio.decoding import decode
from voxguard.audio.windows import make_windows
from voxguard.model.checkpoints import sha256_file
from voxguard.model.locate import BUNDLED_DIR, REGISTRY
from voxguard.pipeline import Pipeline
from voxguard.scoring import summarize
from voxguard.settings import Settings

SHIPPED = ("specnet", "specnet-whisper")


def recorded(model: str) -> dict:
    return json.loads((BUNDLED_DIR / f"{model}.scores.json").read_text())


@pytest.fixture(params=SHIPPED)
def model(request: pytest.FixtureRequest) -> str:
    return request.param


def test_the_shipped_file_is_the_registered_one(model):
    spec = REGISTRY[model]
    path = BUNDLED_DIR / spec.filename
    assert spec.bundled and spec.score_offset == 0.0
    assert sha256_file(path) == spec.sha256 == recorded(model)["sha256"]
    assert path.stat().st_size == spec.size == recorded(model)["size"] < 10 * 2**20
    assert (BUNDLED_DIR / "MODEL_CARD.md").read_text().count(spec.sha256) >= 1


def test_it_reproduces_its_recorded_scores(detector_factory, golden, samples_dir, model):
    detector = detector_factory(model, "fast")
    margins = detector.scores(golden["inputs"])
    names = [str(n) for n in golden["row_names"]]
    np.testing.assert_allclose(margins, [recorded(model)["golden_margins"][n] for n in names], atol=1e-3)
    pipeline = Pipeline(
        Settings().audio,
        Settings().rule.for_loaded(detector.info),
    )
    for name, want in recorded(model)["sample_fake_probability"].items():
        got = pipeline.run((samples_dir / name).read_bytes(), detector, 4).decision.fake_probability
        assert got == pytest.approx(want, abs=1e-4), name


@pytest.mark.parametrize("voice", [None, "en-gb+f3", "en-us+m3"])
def test_classic_synthetic_speech_is_fake_even_30db_quieter(detector_factory, tmp_path, voice, model):
    detector = detector_factory(model, "fast")
    audio = decode(
        espeak_ng(
            "Please call Stella and ask her to bring these things.", tmp_path / "a.wav", voice
        ).read_bytes()
    )
    for gain_db in (0, -30):
        quiet = (audio.waveform * 10 ** (gain_db / 20)).astype(np.float32)
        windows = make_windows(quiet, preprocess="robust")
        assert summarize(audio, windows, detector.scores(windows.batch)).prediction == "FAKE", gain_db


def test_the_cli_finds_the_shipped_model_without_any_weights_folder(samples_dir, tmp_path, model):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxguard.cli",
            "predict",
            "--model",
            model,
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
    assert line["model"] == model
    assert line["fake_probability"] == pytest.approx(
        recorded(model)["sample_fake_probability"]["voicememo.mp3"], abs=1e-4
    )


def test_the_service_serves_specnet_whisper_beside_specnet(detector_factory, samples_dir):
    detectors = {name: detector_factory(name, "fast") for name in SHIPPED}
    memo = (samples_dir / "voicememo.mp3").read_bytes()
    with live_server(detectors) as srv:
        listed = {m["name"]: m for m in httpx.get(f"{srv.url}/v1/models").json()["models"]}
        assert listed["specnet-whisper"]["architecture"] == "SpecWhisper"
        # Three SpecNets of 204,082 weights, the head's 385 and the calibration's 2, and the frozen
        # encoder's.
        assert listed["specnet-whisper"]["parameters"] == 3 * 204_082 + 385 + 2 + 8_209_920
        assert listed["specnet-whisper"]["sha256"] == REGISTRY["specnet-whisper"].sha256
        # Its file rule: one window must be this much more synthetic than the mean needs to be.
        assert listed["specnet-whisper"]["local_margin"] == detectors["specnet-whisper"].info.local_margin > 0
        assert listed["specnet"]["local_margin"] is None
        for name in SHIPPED:
            answer = httpx.post(
                f"{srv.url}/v1/predict",
                params={"model": name},
                files={"file": ("voicememo.mp3", memo)},
                timeout=120,
            ).json()
            assert answer["model"] == name
            assert answer["fake_probability"] == pytest.approx(
                recorded(name)["sample_fake_probability"]["voicememo.mp3"], abs=1e-4
            )
