"""The file verdict rule: sustained runs of fake windows, the segments they make, and the speech floor."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from voxguard.scoring import (
    FAKE,
    INCONCLUSIVE,
    REAL,
    Rule,
    RuleOptions,
    decide,
    fake_probability,
    find_segments,
    sustained_score,
)

REAL_S, FAKE_S = 6.0, -6.0  # window scores: fake probability 0.0025 and 0.9975


def grid(n: int, hop: float = 2.0, window: float = 4.04) -> list[tuple[float, float]]:
    """Window spans as the service cuts a recording: every ``hop`` seconds."""
    return [(i * hop, i * hop + window) for i in range(n)]


def test_sustained_score_is_the_best_runs_weakest_window():
    scores = np.array([3.0, -5.0, -1.0, 4.0, -7.0, -6.0])
    # pairs' highest scores: 3, -1, 4, 4, -6 -> the lowest is -6 (windows 4 and 5 both fake)
    assert sustained_score(scores, 2) == -6.0
    assert sustained_score(scores, 1) == -7.0
    assert sustained_score(scores, 3) == 3.0  # every triple holds a real window; the weakest highest is 3
    assert sustained_score(scores[:1], 2) == 3.0  # fewer windows than the run: all of them


PAIRS = Rule(min_windows=2)


def test_one_fake_window_among_real_ones_is_not_a_run_of_two():
    scores = np.array([REAL_S, REAL_S, FAKE_S, REAL_S, REAL_S])
    d = decide(grid(5), scores, [False] * 5, PAIRS)
    assert d.prediction == REAL and d.segments == []
    assert d.fake_probability < 0.5
    single = decide(grid(5), scores, [False] * 5, Rule())
    assert single.prediction == FAKE
    assert [(s.start_s, s.end_s) for s in single.segments] == [(4.0, 8.04)]


def test_the_offset_moves_the_decision_boundary_and_every_reported_number():
    margins = np.array([REAL_S, -4.0, REAL_S])  # the model's own: fake probability 0.982 for window 1
    plain = decide(grid(3), margins, [False] * 3, Rule())
    shifted = decide(grid(3), margins, [False] * 3, Rule(offset=6.0))
    assert plain.prediction == FAKE and plain.fake_probability == pytest.approx(fake_probability(-4.0))
    assert shifted.prediction == REAL and shifted.score == pytest.approx(2.0)
    assert shifted.fake_probability == pytest.approx(fake_probability(2.0))
    assert decide(grid(3), np.array([REAL_S, -6.5, REAL_S]), [False] * 3, Rule(offset=6.0)).prediction == FAKE


def test_a_padded_synthetic_stretch_is_found_and_located():
    # 12 s of real speech then synthetic: windows starting at 10 s and later hear the synthetic part
    scores = np.array([REAL_S] * 5 + [REAL_S, FAKE_S, FAKE_S, FAKE_S])
    d = decide(grid(9), scores, [False] * 9, PAIRS)
    assert d.prediction == FAKE and d.is_fake
    (segment,) = d.segments
    assert segment.start_s == pytest.approx(12.0) and segment.end_s == pytest.approx(20.04)  # windows 6-8
    assert segment.fake_probability == pytest.approx(fake_probability(FAKE_S))
    assert d.fake_probability == pytest.approx(fake_probability(FAKE_S))
    assert d.confidence == pytest.approx(d.fake_probability)


def test_silent_windows_do_not_break_a_run_and_do_not_count():
    scores = np.array([REAL_S, FAKE_S, 9.0, FAKE_S, REAL_S])
    silent = [False, False, True, False, False]
    d = decide(grid(5), scores, silent, PAIRS)
    assert d.prediction == FAKE and len(d.segments) == 1


def test_a_file_shorter_than_the_run_needs_all_its_windows():
    assert decide(grid(1), np.array([FAKE_S]), [False], PAIRS).prediction == FAKE
    assert decide(grid(2), np.array([FAKE_S, REAL_S]), [False, False], PAIRS).prediction == REAL
    assert decide(grid(2), np.array([FAKE_S, FAKE_S]), [False, False], PAIRS).prediction == FAKE


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("run", [1, 2, 3])
@pytest.mark.parametrize("seed", range(10))
def test_fake_exactly_when_the_file_probability_reaches_the_threshold(threshold, run, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    scores = rng.normal(0.0, 6.0, n)
    silent = list(rng.random(n) < 0.15)
    if all(silent):
        silent[0] = False
    rule = Rule(threshold=threshold, min_windows=run, offset=float(rng.normal(0.0, 3.0)))
    d = decide(grid(n), scores, silent, rule)
    assert (d.prediction == FAKE) == (d.fake_probability >= threshold) == bool(d.segments)
    assert d.score == pytest.approx(-math.log(d.fake_probability / (1 - d.fake_probability)), abs=1e-6)


def test_too_little_speech_is_inconclusive_and_publishes_no_probability():
    rule = Rule(min_reliable_s=2.0)
    d = decide(grid(1), np.array([FAKE_S]), [False], rule, speech_s=0.5)
    assert d.prediction == INCONCLUSIVE
    assert d.is_fake is None and d.confidence is None
    assert d.reason == "too short to judge: 0.5 s of speech, at least 2 s needed"
    record = d.record()
    assert record["fake_probability"] is None and record["score"] is None and record["segments"] == []
    assert decide(grid(1), np.array([FAKE_S]), [False], rule, speech_s=2.0).prediction == FAKE


def test_inconclusive_says_which_way_it_leaned_in_fields_of_its_own():
    rule = Rule(min_reliable_s=2.0)
    fake = decide(grid(1), np.array([FAKE_S]), [False], rule, speech_s=0.5).record()
    assert (fake["prediction"], fake["leaning"]) == (INCONCLUSIVE, FAKE)
    assert fake["leaning_fake_probability"] == pytest.approx(fake_probability(FAKE_S))
    assert fake["is_fake"] is fake["confidence"] is fake["fake_probability"] is None  # still no verdict
    real = decide(grid(1), np.array([REAL_S]), [False], rule, speech_s=0.5).record()
    assert real["leaning"] == REAL and real["leaning_fake_probability"] == pytest.approx(
        fake_probability(REAL_S)
    )
    judged = decide(grid(1), np.array([FAKE_S]), [False], rule, speech_s=2.0).record()
    assert judged["leaning"] is judged["leaning_fake_probability"] is None


def test_find_segments_reports_every_qualifying_run():
    scores = np.array([FAKE_S, FAKE_S, REAL_S, REAL_S, FAKE_S, -3.0, REAL_S])
    segments = find_segments(grid(7), scores, [False] * 7, PAIRS)
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 6.04), (8.0, 14.04)]
    assert segments[1].fake_probability == pytest.approx(fake_probability(-3.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"min_windows": 0},
        {"min_reliable_s": -1.0},
        {"offset": float("nan")},
        {"scale": 0.0},
        {"scale": -1.0},
        {"scale": float("inf")},
        {"local_margin": -0.5},
        {"local_margin": float("nan")},
    ],
)
def test_rule_refuses_impossible_values(kwargs):
    with pytest.raises(ValueError):
        Rule(**kwargs)


def test_a_configured_offset_overrides_every_models_own_and_unset_each_keeps_its_own():
    configured = RuleOptions(threshold=0.7, min_windows=2, min_reliable_s=1.0, offset=None)
    assert configured.for_model(0.0, 1.0) == Rule(0.7, 2, 1.0, 0.0)
    assert configured.for_model(6.0, 0.5) == Rule(0.7, 2, 1.0, 6.0, 0.5)
    assert RuleOptions(0.7, 2, 1.0, offset=-1.0).for_model(6.0, 0.5) == Rule(0.7, 2, 1.0, -1.0, 0.5)


def test_a_local_margin_asks_more_of_one_window_than_of_the_whole_file():
    rule = Rule(local_margin=1.5)
    # A real recording with one window just past the boundary: FAKE by the best run alone, REAL here.
    one_slip = np.array([REAL_S, REAL_S, -1.0, REAL_S, REAL_S])
    assert decide(grid(5), one_slip, [False] * 5, Rule()).prediction == FAKE
    slipped = decide(grid(5), one_slip, [False] * 5, rule)
    assert (slipped.prediction, slipped.segments) == (REAL, [])
    assert slipped.score == pytest.approx(-1.0 + 1.5)
    # Synthetic throughout, no window far past the boundary: FAKE on its mean, segments where it is fake.
    throughout = np.array([-0.5, -0.5, 0.3, -0.5])
    judged = decide(grid(4), throughout, [False] * 4, rule)
    assert judged.prediction == FAKE and judged.score == pytest.approx(throughout.mean())
    assert [(s.start_s, s.end_s) for s in judged.segments] == [(0.0, 6.04), (6.0, 10.04)]
    # A synthetic stretch inside real speech is still found by its own window.
    spliced = decide(grid(5), np.array([REAL_S, REAL_S, FAKE_S, REAL_S, REAL_S]), [False] * 5, rule)
    assert spliced.prediction == FAKE and spliced.score == pytest.approx(FAKE_S + 1.5)
    assert [(s.start_s, s.end_s) for s in spliced.segments] == [(4.0, 8.04)]


@pytest.mark.parametrize("run", [1, 2])
@pytest.mark.parametrize("seed", range(20))
def test_with_a_local_margin_fake_is_still_the_file_probability_at_the_threshold(run, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    scores = rng.normal(0.0, 3.0, n)
    rule = Rule(min_windows=run, local_margin=float(rng.uniform(0.0, 3.0)))
    d = decide(grid(n), scores, [False] * n, rule)
    assert (d.prediction == FAKE) == (d.fake_probability >= 0.5)
    assert d.score <= scores.mean() + 1e-9
    assert d.score <= sustained_score(scores, run) + rule.local_margin + 1e-9
    assert d.prediction == FAKE or not d.segments
    if run == 1:  # a file FAKE on its mean has a window past the boundary, hence a segment
        assert (d.prediction == FAKE) == bool(d.segments)


def test_a_models_local_margin_reaches_its_rule():
    assert RuleOptions(0.5, 1, 2.0, offset=None).for_model(0.0, 1.0, 1.5).local_margin == 1.5
    assert RuleOptions(0.5, 1, 2.0, offset=None).for_model(6.0, 0.25).local_margin is None
    loaded = SimpleNamespace(score_offset=6.0, score_scale=0.25, local_margin=1.5)  # as ModelInfo says
    assert RuleOptions(0.5, 1, 2.0, offset=None).for_loaded(loaded) == Rule(0.5, 1, 2.0, 6.0, 0.25, 1.5)
    assert RuleOptions(0.5, 1, 2.0, offset=0.0).for_loaded(loaded) == Rule(0.5, 1, 2.0, 0.0, 0.25, 1.5)


def test_a_configured_scale_overrides_every_models_own_and_unset_each_keeps_its_own():
    assert RuleOptions(0.5, 1, 2.0, offset=None).for_model(6.0, 0.25).scale == 0.25
    assert RuleOptions(0.5, 1, 2.0, offset=None, scale=1.0).for_model(6.0, 0.25).scale == 1.0


def test_the_scale_changes_how_sure_a_score_is_and_never_which_side_it_is_on():
    margins = np.array([REAL_S, -9.0, -5.0])  # with offset 6: scores 12, -3 and 1
    plain = Rule(offset=6.0)
    scaled = Rule(offset=6.0, scale=0.1)
    for a, b in zip(
        plain.window_scores(grid(3), margins, [False] * 3),
        scaled.window_scores(grid(3), margins, [False] * 3),
        strict=True,
    ):
        assert b.score == pytest.approx(0.1 * a.score)
        assert (a.fake_probability >= 0.5) == (b.fake_probability >= 0.5)
    d_plain = decide(grid(3), margins, [False] * 3, plain)
    d_scaled = decide(grid(3), margins, [False] * 3, scaled)
    assert d_plain.prediction == d_scaled.prediction == FAKE
    assert [(s.start_s, s.end_s) for s in d_plain.segments] == [
        (s.start_s, s.end_s) for s in d_scaled.segments
    ]
    assert d_plain.confidence == pytest.approx(fake_probability(-3.0))  # 0.95
    assert d_scaled.confidence == pytest.approx(fake_probability(-0.3))  # 0.57: says less


def test_a_window_is_fake_by_the_same_comparison_a_segment_is_made_of():
    rule = Rule(threshold=0.8, offset=2.0)
    windows = rule.window_scores(grid(3), np.array([-6.0, -3.0, 0.0]), [False] * 3)
    assert [w.score for w in windows] == [-4.0, -1.0, 2.0]
    assert [rule.is_fake(w.fake_probability) for w in windows] == [True, False, False]
    (segment,) = find_segments(grid(3), np.array([-6.0, -3.0, 0.0]), [False] * 3, rule)
    assert (segment.start_s, segment.end_s) == grid(3)[0]
