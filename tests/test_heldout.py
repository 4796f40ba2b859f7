"""The held-out evaluation's figures, on hand-made decisions whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from voxguard.audio.windows import WindowSet
from voxguard.evaluation.heldout import Cut, HeldOutFile, file_margins, judge, summarise
from voxguard.scoring import Rule


def _cut(label: str, channel: str = "clean", n: int = 1, speech_s: float = 4.0) -> Cut:
    spans = [(2.0 * i, 2.0 * i + 4.04) for i in range(n)]
    windows = WindowSet(np.zeros((n, 8), np.float32), spans, [False] * n, [-20.0] * n, speech_s)
    return Cut(
        HeldOutFile(f"{label}-{channel}", label, "x" if label == "spoof" else "real", channel), windows
    )


def test_rates_eer_and_confidence_follow_the_decisions():
    cuts = [
        _cut("bonafide"),
        _cut("bonafide", "gsm"),
        _cut("bonafide"),
        _cut("spoof"),
        _cut("spoof", "gsm"),
        _cut("bonafide", speech_s=1.0),
    ]
    # margins: real +5, real (gsm) -0.5 (a mild false alarm), real +0.2, fake -5, fake +3 (confidently missed)
    margins = [
        np.array([5.0]),
        np.array([-0.5]),
        np.array([0.2]),
        np.array([-5.0]),
        np.array([3.0]),
        np.array([9.0]),
    ]
    s = summarise(cuts, judge(cuts, margins, Rule(min_reliable_s=2.0)))
    assert s.files == 6 and s.inconclusive == 1
    assert s.real_flagged == pytest.approx(1 / 3)
    assert s.real_flagged_by_channel == {"clean": 0.0, "gsm": 1.0}
    assert s.fake_caught == 0.5 and s.fake_caught_by_channel == {"clean": 1.0, "gsm": 0.0}
    # scores (positive = real): real 5, -0.5, 0.2; fake -5, 3: the fake at 3 outranks two real files.
    assert s.eer == pytest.approx(0.5, abs=0.17)
    # confidence >= 0.9: real 5 (right), fake -5 (right), fake 3 (wrong: REAL with 0.95)
    assert s.confident_answers == 3
    assert s.confident_wrong == pytest.approx(1 / 3)
    assert s.confidently_wrong_share == pytest.approx(1 / 5)
    assert sum(b["answers"] for b in s.reliability) == 5


def test_a_file_is_as_fake_as_its_most_fake_window():
    cuts = [_cut("spoof", n=3)]
    assert file_margins(cuts, [np.array([4.0, -2.0, 1.0])]).tolist() == [-2.0]


def test_with_a_local_margin_a_file_is_as_fake_as_its_mean_or_its_most_fake_window_plus_the_margin():
    cuts = [_cut("spoof", n=3), _cut("bonafide", n=3)]
    margins = [np.array([4.0, -2.0, 1.0]), np.array([-1.0, -1.0, -1.0])]
    assert file_margins(cuts, margins, Rule(local_margin=1.5)).tolist() == [-0.5, -1.0]
    assert file_margins(cuts, margins, Rule(local_margin=5.0)).tolist() == [1.0, -1.0]
