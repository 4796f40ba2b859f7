"""EER on score sets small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from voxguard.evaluation.metrics import det_curve, equal_error_rate


def test_separable_scores_have_zero_eer_and_a_threshold_between_the_classes() -> None:
    eer, threshold = equal_error_rate([2.0, 3.0, 4.0], [-3.0, -2.0, -1.0])
    assert eer == 0.0
    assert -1.0 <= threshold < 2.0


def test_one_overlap_in_four_is_a_quarter() -> None:
    # bona fide 1 sits below spoof 2: rejecting it (t = 1) leaves spoof 2 accepted -> miss 1/4, fa 1/4.
    eer, threshold = equal_error_rate([1.0, 5.0, 6.0, 7.0], [-3.0, -2.0, -1.0, 2.0])
    assert eer == pytest.approx(0.25)
    assert threshold == 1.0


def test_identical_distributions_give_half() -> None:
    rng = np.random.default_rng(0)
    eer, _ = equal_error_rate(rng.normal(size=4000), rng.normal(size=4000))
    assert eer == pytest.approx(0.5, abs=0.03)


def test_det_curve_runs_from_accept_all_to_reject_all() -> None:
    curve = det_curve([1.0, 2.0], [0.0])
    assert curve.miss.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert curve.false_alarm.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert curve.thresholds[0] < 0.0


def test_empty_or_nan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="no spoof scores"):
        equal_error_rate([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        equal_error_rate([1.0, float("nan")], [0.0])
