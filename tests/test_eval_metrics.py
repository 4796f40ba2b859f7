"""EER on score sets small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from voxguard.evaluation.metrics import (
    ASVSPOOF2019_COST_MODEL,
    AsvErrorRates,
    asv_error_rates,
    det_curve,
    equal_error_rate,
    min_tdcf,
    threshold_metrics,
)


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


# --- ASVspoof 2019 t-DCF. Cost model: p_target 0.9405, p_nontarget 0.0095, p_spoof 0.05,
# c_miss_asv 1, c_fa_asv 10, c_miss_cm 1, c_fa_cm 10.


def test_asv_operating_point_is_its_eer_threshold_with_accept_at_or_above() -> None:
    # ASV EER of target [1,5,6,7] vs non-target [-3,-2,-1,2] is 1/4 at threshold 1 (test above).
    # At t = 1: targets below 1: none -> miss 0; non-targets >= 1: {2} -> 1/4; spoofs below 1: {0} -> 1/4.
    rates = asv_error_rates([1.0, 5.0, 6.0, 7.0], [-3.0, -2.0, -1.0, 2.0], [0.0, 3.0, 4.0, 9.0])
    assert (rates.threshold, rates.eer) == (1.0, 0.25)
    assert (rates.miss, rates.false_alarm, rates.spoof_miss) == (0.0, 0.25, 0.25)


def test_asv_score_at_the_threshold_counts_as_accepted_as_in_the_official_code() -> None:
    # Separable target [10, 11] vs non-target [0, 1]: the EER search stops at the highest non-target
    # (t = 1, EER 0), and that non-target, scoring exactly t, is then counted as a false alarm: 1/2.
    rates = asv_error_rates([10.0, 11.0], [0.0, 1.0], [5.0])
    assert (rates.threshold, rates.eer, rates.false_alarm, rates.miss, rates.spoof_miss) == (1, 0, 0.5, 0, 0)


# CM scores for both t-DCF cases: bona fide [1, 2, 8, 9], spoof [0, 3, 4, 5]. DET points
# (threshold: Pmiss_cm, Pfa_cm): accept all (0, 1); 0: (0, 3/4); 1: (1/4, 3/4); 2: (2/4, 3/4);
# 3: (2/4, 2/4); 4: (2/4, 1/4); 5: (2/4, 0); 8: (3/4, 0); 9: (1, 0).
CM_BONAFIDE = [1.0, 2.0, 8.0, 9.0]
CM_SPOOF = [0.0, 3.0, 4.0, 5.0]


def _asv(miss: float, false_alarm: float, spoof_miss: float) -> AsvErrorRates:
    return AsvErrorRates(threshold=0.0, eer=0.0, false_alarm=false_alarm, miss=miss, spoof_miss=spoof_miss)


def test_min_tdcf_when_passing_spoofs_is_the_cheaper_error() -> None:
    # ASV Pmiss 0, Pfa 1/4, Pmiss_spoof 1/4:
    #   C1 = 0.9405 * (1 - 0) - 0.0095 * 10 * 0.25 = 0.91675;  C2 = 10 * 0.05 * (1 - 0.25) = 0.375.
    # Normalised by min = C2: 2.44467 * Pmiss_cm + Pfa_cm. Along the DET points: 1, 0.75, 1.36, 1.97,
    # 1.72, 1.47, 1.22, 1.83, 2.44 -> minimum 0.75 at CM threshold 0 (reject only the lowest spoof).
    cost = min_tdcf(CM_BONAFIDE, CM_SPOOF, _asv(0.0, 0.25, 0.25))
    assert cost.c1 == pytest.approx(0.91675)
    assert cost.c2 == pytest.approx(0.375)
    assert cost.min_tdcf == pytest.approx(0.75)
    assert cost.threshold == 0.0


def test_min_tdcf_when_blocking_bona_fide_is_the_cheaper_error() -> None:
    # ASV Pmiss 1/2, Pfa 1/4, Pmiss_spoof 0:
    #   C1 = 0.9405 * (1 - 0.5) - 0.0095 * 10 * 0.25 = 0.4465;  C2 = 10 * 0.05 * 1 = 0.5.
    # Normalised by min = C1: Pmiss_cm + 1.11982 * Pfa_cm. Along the DET points: 1.12, 0.84, 1.09,
    # 1.34, 1.06, 0.78, 0.5, 0.75, 1 -> minimum 0.5 at CM threshold 5 (reject every spoof).
    cost = min_tdcf(CM_BONAFIDE, CM_SPOOF, _asv(0.5, 0.25, 0.0))
    assert cost.c1 == pytest.approx(0.4465)
    assert cost.c2 == pytest.approx(0.5)
    assert cost.min_tdcf == pytest.approx(0.5)
    assert cost.threshold == 5.0


def test_a_perfect_cm_has_zero_tdcf_and_a_useless_one_at_least_one() -> None:
    assert min_tdcf([5.0, 6.0], [1.0, 2.0], _asv(0.0, 0.25, 0.25)).min_tdcf == 0.0
    # Identical score sets: every threshold costs at least min(C1, C2), i.e. normalised >= 1.
    same = [1.0, 2.0, 3.0, 4.0]
    assert min_tdcf(same, same, _asv(0.0, 0.25, 0.25)).min_tdcf >= 1.0


def test_tdcf_refuses_decisions_and_degenerate_weights() -> None:
    with pytest.raises(ValueError, match="soft scores"):
        min_tdcf([1.0, 1.0], [0.0, 0.0], _asv(0.0, 0.25, 0.25))
    with pytest.raises(ValueError, match="C2=0"):
        min_tdcf(CM_BONAFIDE, CM_SPOOF, _asv(0.0, 0.25, 1.0))
    with pytest.raises(ValueError, match="no ASV spoof scores"):
        asv_error_rates([1.0], [0.0], [])


def test_asvspoof2019_cost_model_priors() -> None:
    model = ASVSPOOF2019_COST_MODEL
    assert (model.p_target, model.p_nontarget, model.p_spoof) == pytest.approx((0.9405, 0.0095, 0.05))
    assert (model.c_miss_asv, model.c_fa_asv, model.c_miss_cm, model.c_fa_cm) == (1, 10, 1, 10)


def test_threshold_metrics_count_spoof_as_the_positive_class() -> None:
    # bona fide called FAKE: 1 of 3 (fp 1, tn 2); spoof called FAKE: 3 of 4 (tp 3, fn 1).
    m = threshold_metrics([False, False, True], [True, True, False, True])
    assert (m.true_positive, m.false_positive, m.true_negative, m.false_negative) == (3, 1, 2, 1)
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.precision == pytest.approx(3 / 4)
    assert m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(0.75)


def test_threshold_metrics_without_spoofs_leave_recall_and_f1_undefined() -> None:
    m = threshold_metrics([False, True], [])
    assert (m.accuracy, m.precision, m.recall, m.f1) == (0.5, 0.0, None, None)
