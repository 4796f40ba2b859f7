"""The quiet-synthetic-speech attack, and the per-window level normalisation that defeats it."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic_speech import espeak_ng
from voxguard.audio.decoding import decode
from voxguard.audio.windows import make_windows
from voxguard.scoring import summarize

SENTENCE = "Please call Stella. Ask her to bring these things with her from the store."


@pytest.fixture(scope="module")
def synthetic_speech(tmp_path_factory):
    out = espeak_ng(SENTENCE, tmp_path_factory.mktemp("tts") / "tts.wav")
    return decode(out.read_bytes())


@pytest.mark.parametrize("model", ["aasist", "aasist-l", "specnet"])
def test_synthetic_speech_quietened_30db_is_still_fake_in_robust_mode(
    synthetic_speech, detector_factory, model
):
    detector = detector_factory(model, "fast")
    quiet = (synthetic_speech.waveform * 10 ** (-30 / 20)).astype(np.float32)
    windows = make_windows(quiet, preprocess="robust")
    verdict = summarize(synthetic_speech, windows, detector.scores(windows.batch))
    assert verdict.prediction == "FAKE"
    assert verdict.decision.fake_probability > 0.99


def test_the_attack_works_without_normalisation(synthetic_speech, detector_factory):
    detector = detector_factory("aasist", "fast")
    loud = make_windows(synthetic_speech.waveform, preprocess="reference")
    assert summarize(synthetic_speech, loud, detector.scores(loud.batch)).prediction == "FAKE"
    quiet = make_windows(
        (synthetic_speech.waveform * 10 ** (-30 / 20)).astype(np.float32), preprocess="reference"
    )
    assert summarize(synthetic_speech, quiet, detector.scores(quiet.batch)).prediction == "REAL"


def test_real_speech_stays_real_in_robust_mode(samples_dir, detector_factory):
    detector = detector_factory("aasist", "fast")
    for name in ("p225_001_mic1.flac", "p225_002_mic1.flac", "voicememo.mp3"):
        audio = decode((samples_dir / name).read_bytes())
        windows = make_windows(audio.waveform, preprocess="robust")
        assert summarize(audio, windows, detector.scores(windows.batch)).prediction == "REAL", name
