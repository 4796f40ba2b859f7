"""Detector and verdict rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxguard.audio.decoding import AudioInfo, DecodedAudio
from voxguard.audio.options import SAMPLE_RATE, WINDOW
from voxguard.audio.windows import make_windows
from voxguard.inference import CPU_FORWARD_WINDOWS, Detector, resolve_device
from voxguard.scoring import Rule, fake_probability, summarize


def test_detector_scores_equal_golden_margins(detector_factory, golden):
    for model, key in (("aasist", "aasist"), ("aasist-l", "aasist_l")):
        want = golden[f"{key}_logits"][:, 1] - golden[f"{key}_logits"][:, 0]
        got = detector_factory(model, "eager").scores(golden["inputs"])
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_fast_detector_within_1e3_of_eager(detector_factory, golden):
    eager = detector_factory("aasist", "eager").logits(golden["inputs"])
    fast = detector_factory("aasist", "fast").logits(golden["inputs"])
    assert np.abs(fast - eager).max() < 1e-3


def test_cpu_forwards_take_at_most_four_windows(checkpoint_dir, golden, monkeypatch):
    """A CPU batch runs as forwards of CPU_FORWARD_WINDOWS, which bounds the heap (docs/benchmarks.md),
    and scores exactly as one forward would."""
    detector = Detector.load("aasist", checkpoint_dir=checkpoint_dir, engine="eager", device="cpu")
    sizes: list[int] = []
    module = detector._module

    def recorded(windows):
        sizes.append(len(windows))
        return module(windows)

    monkeypatch.setattr(detector, "_module", recorded)
    got = detector.logits(golden["inputs"][:7])
    assert CPU_FORWARD_WINDOWS == 4
    assert sizes == [4, 3]
    np.testing.assert_allclose(got, golden["aasist_logits"][:7], atol=1e-4, rtol=0)


def test_detector_rejects_wrong_shape(detector_factory):
    with pytest.raises(ValueError, match="64600"):
        detector_factory().scores(np.zeros((1, 16000), dtype=np.float32))


def test_detector_info(detector_factory):
    info = detector_factory("aasist-l", "fast").info
    assert (info.name, info.engine, info.parameters) == ("aasist-l", "fast", 85_306)
    assert len(info.sha256) == 64


def test_cuda_graph_replays_match_the_plain_forward(checkpoint_dir, device, golden):
    """On CUDA every batch size goes through a captured graph (refilled on each call); elsewhere the
    option is recorded as off. Either way the logits equal the plain forward's."""
    from voxguard.inference import Detector

    graphed = Detector.load("aasist", checkpoint_dir=checkpoint_dir, engine="fast", device=str(device))
    plain = Detector.load(
        "aasist", checkpoint_dir=checkpoint_dir, engine="fast", device=str(device), cuda_graphs=False
    )
    assert graphed.info.cuda_graphs is (device.type == "cuda") and not plain.info.cuda_graphs
    inputs = golden["inputs"]
    for rows in (inputs[:1], inputs[:3], inputs[::-1][:3], inputs):
        np.testing.assert_allclose(graphed.logits(rows), plain.logits(rows), atol=1e-5, rtol=0)
    assert sorted(graphed._graphs) == ([1, 4, 8] if device.type == "cuda" else [])  # 8 golden rows


def test_cuda_request_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")


@pytest.mark.parametrize("score", [-50.0, -3.0, -0.1, 0.0, 0.1, 3.0, 50.0, 800.0, -800.0])
def test_fake_probability_is_softmax_spoof_probability(score):
    logits = np.array([0.0, score])
    softmax_spoof = math.exp(logits[0] - logits.max()) / np.exp(logits - logits.max()).sum()
    assert fake_probability(score) == pytest.approx(softmax_spoof, abs=1e-12)


def _audio(seconds: float, rate: int = SAMPLE_RATE) -> DecodedAudio:
    n = int(seconds * SAMPLE_RATE)
    wave = (0.1 * np.sin(np.arange(n) * 0.05)).astype(np.float32)
    return DecodedAudio(wave, AudioInfo(rate, 1, seconds, "wav", "pcm_16"))


def test_summary_most_fake_window_threshold_and_confidence():
    audio = _audio(10.0)
    windows = make_windows(audio.waveform, preprocess="reference")
    scores = np.linspace(-2.0, 1.0, len(windows.spans))
    v = summarize(audio, windows, scores, Rule(threshold=0.5))
    assert v.decision.score == pytest.approx(scores.min())
    assert v.decision.fake_probability == pytest.approx(1 / (1 + math.exp(scores.min())))
    d = v.decision
    assert d.is_fake and v.prediction == "FAKE" and d.confidence == pytest.approx(d.fake_probability)
    strict = summarize(audio, windows, scores, Rule(threshold=0.99)).decision
    assert not strict.is_fake and strict.prediction == "REAL"
    assert strict.confidence == pytest.approx(1 - strict.fake_probability)
    assert [w.score for w in v.windows] == pytest.approx(list(scores))
    shifted = summarize(audio, windows, scores, Rule(offset=2.5))
    assert [w.score for w in shifted.windows] == pytest.approx(list(scores + 2.5))
    assert shifted.prediction == "REAL"


def test_summary_leaves_silent_windows_out():
    audio = _audio(10.0)
    audio.waveform[WINDOW:] = 0.0
    windows = make_windows(audio.waveform, preprocess="robust")
    assert windows.silent[0] is False and windows.silent[-1] is True
    scores = np.array([3.0] + [-9.0] * (len(windows.spans) - 1))
    scores[1:] = np.where(windows.silent[1:], -9.0, 3.0)
    v = summarize(audio, windows, scores)
    assert v.prediction == "REAL"
    assert v.decision.score == pytest.approx(3.0)
    assert any("silence floor" in w for w in v.warnings)


def test_summary_warns_about_short_and_narrowband_audio():
    audio = _audio(1.0, rate=8000)
    v = summarize(audio, make_windows(audio.waveform), np.array([2.0]))
    assert any("repeated" in w for w in v.warnings)
    assert any("8000 Hz" in w for w in v.warnings)
