"""One pipeline for every caller: the decision alone (eval) is the verdict's (service, CLI)."""

from __future__ import annotations

import numpy as np

from voxguard.model.locate import AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE
from voxguard.pipeline import Pipeline
from voxguard.settings import Settings


class Constant:
    """Scores every window alike, counting the batches it was given."""

    def __init__(self, margins: np.ndarray) -> None:
        self.margins = margins
        self.batches: list[int] = []

    def scores(self, windows: np.ndarray) -> np.ndarray:
        start = sum(self.batches)
        self.batches.append(len(windows))
        return self.margins[start : start + len(windows)]


def test_run_verdict_and_decision_agree(samples_dir):
    pipeline = Pipeline(Settings().audio, Settings().rule.for_model(AASIST_SCORE_OFFSET, AASIST_SCORE_SCALE))
    data = (samples_dir / "voicememo.mp3").read_bytes()
    audio, windows = pipeline.windows(data)
    margins = np.linspace(-12, 12, len(windows.batch)).astype(np.float32)
    scorer = Constant(margins)
    verdict = pipeline.run(data, scorer, batch_size=2)
    assert scorer.batches == [2] * (len(margins) // 2) + [1] * (len(margins) % 2)
    assert verdict == pipeline.verdict(audio, windows, margins)
    assert pipeline.decision(windows, margins) == verdict.decision
    assert verdict.prediction == "FAKE" and verdict.decision.segments  # the fake tail is found
