"""Segment edges: where a spliced synthetic stretch starts and ends, to within a second (issue 21, point 2).

A stand-in model makes the geometry exact: its "synthetic speech" is a tone at the Nyquist frequency, and a
window is called fake once that tone fills ``NEEDS`` of it, as AASIST calls a 4 s window fake once it holds
about 0.5-2.4 s of synthetic speech; like AASIST's, its score is steep around there and saturates. On the
2 s grid alone a segment's edges are up to a window's worth off.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from voxguard.audio.options import SAMPLE_RATE
from voxguard.audio.speech import SPEECH_FRAME
from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE
from voxguard.pipeline import Pipeline
from voxguard.settings import Settings

NEEDS = 0.45  # share of a window the tone must fill for it to be called fake
OFFSET = 6.0  # the pipeline's score offset (RuleOptions.for_model's default)


class ToneModel:
    """Margins from the share of 20 ms frames that are the Nyquist tone (lag-1 correlation near -1)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def scores(self, windows: np.ndarray) -> np.ndarray:
        self.calls.append(len(windows))
        frames = windows[:, : windows.shape[1] // SPEECH_FRAME * SPEECH_FRAME].reshape(
            len(windows), -1, SPEECH_FRAME
        )
        lag = (frames[..., 1:] * frames[..., :-1]).mean(-1) / np.maximum((frames**2).mean(-1), 1e-12)
        share = (lag < -0.5).mean(-1)
        return (np.clip(60.0 * (NEEDS - share), -10.0, 10.0) - OFFSET).astype(np.float32)


def spliced(seconds: float, fake_s: tuple[float, float], seed: int = 0) -> bytes:
    """``seconds`` of noise (the "real speech") with the tone from ``fake_s[0]`` to ``fake_s[1]``."""
    rng = np.random.default_rng(seed)
    wave = rng.normal(0.0, 0.1, round(seconds * SAMPLE_RATE)).astype(np.float32)
    a, b = (round(t * SAMPLE_RATE) for t in fake_s)
    wave[a:b] = 0.1 * np.where(np.arange(b - a) % 2, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.fixture
def pipeline() -> Pipeline:
    return Pipeline(Settings().audio, Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE))


# The splices (reported as 10.0-14.04, 12.0-16.04 and 2.0-6.04), one near a file's end and a
# wholly synthetic file.
SPLICES = [
    (20.0, (9.27, 14.92)),
    (20.0, (11.03, 15.60)),
    (20.0, (0.3, 5.3)),
    (21.0, (15.7, 20.6)),
    (5.65, (0.0, 5.65)),
]


@pytest.mark.parametrize(("seconds", "fake_s"), SPLICES)
def test_a_segment_starts_and_ends_within_a_second_of_the_synthetic_stretch(pipeline, seconds, fake_s):
    verdict = pipeline.run(spliced(seconds, fake_s), ToneModel(), batch_size=8)
    (segment,) = verdict.decision.segments
    f0, f1 = fake_s
    covered = min(segment.end_s, f1) - max(segment.start_s, f0)
    assert covered >= 0.9 * (f1 - f0)
    assert abs(segment.start_s - f0) <= 1.0 and abs(segment.end_s - f1) <= 1.0


def test_edges_move_the_segments_only(pipeline):
    """The verdict, its probability and the window list are the grid's; the probes are not windows."""
    data = spliced(20.0, (9.27, 14.92))
    audio, windows = pipeline.windows(data)
    grid = pipeline.verdict(audio, windows, ToneModel().scores(windows.batch))
    verdict = pipeline.run(data, ToneModel(), batch_size=8)
    assert verdict.windows == grid.windows
    assert verdict.decision.prediction == grid.decision.prediction == "FAKE"
    assert verdict.decision.fake_probability == grid.decision.fake_probability
    assert verdict.decision.segments != grid.decision.segments


def test_the_edges_cost_four_half_windows_per_segment_and_nothing_on_a_real_file(pipeline):
    model = ToneModel()
    data = spliced(20.0, (9.27, 14.92))
    windows = pipeline.windows(data)[1]
    pipeline.run(data, model, batch_size=64)
    assert model.calls == [len(windows.spans), 2, 2]  # the grid, then two rounds of one probe per edge
    real = ToneModel()
    pipeline.run(spliced(20.0, (0.0, 0.0)), real, batch_size=64)
    assert real.calls == [len(windows.spans)]
