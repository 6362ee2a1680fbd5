"""Session metrics: the predecessor's convergence and composite exactly, and ours."""

import math

import pytest

from spikeopt.tasks.control_metrics import (
    legacy_converged_at,
    legacy_scores,
    session_metrics,
    stable_at,
)


def test_legacy_convergence_is_the_first_constant_window_from_episode_20():
    s = [1, 0] * 15 + [1] * 10  # alternating until 30, then 10 successes
    assert legacy_converged_at(s) == 30
    assert legacy_converged_at([1] * 40) == 20  # never before episode 20
    assert legacy_converged_at([1, 0] * 20) is None


def test_ten_failures_in_a_row_count_as_converged_for_the_predecessor():
    s = [1] * 20 + [0] * 10 + [1] * 10
    assert legacy_converged_at(s) == 20


def test_legacy_composite_by_hand():
    s = [0, 1] * 10 + [1] * 30  # N = 50, converged at 20, 30 post-convergence successes
    out = legacy_scores(s)
    sr = 40 / 50
    assert out["success_rate"] == pytest.approx(sr)
    assert out["converged_at"] == 20
    assert out["post_convergence_success_rate"] == 1.0
    assert out["composite"] == pytest.approx(0.4 * sr + 0.3 * 1.0 + 0.2 * (1 - 20 / 50) + 0.1)


def test_legacy_composite_when_never_converged_uses_the_last_10():
    s = [1, 0] * 15  # N = 30, var of the last 10 = 0.25
    out = legacy_scores(s)
    assert out["converged_at"] is None
    assert out["post_convergence_success_rate"] == 0.5
    assert out["composite"] == pytest.approx(0.4 * 0.5 + 0.3 * 0.5 + 0.0 + 0.0)


def test_our_convergence_needs_sustained_success():
    assert stable_at([0] * 40, 20, 0.8) is None  # consistent failure is not convergence
    s = [0] * 10 + [1] * 40
    assert stable_at(s, 20, 0.8) == 6  # window [6, 26) holds 16 successes: first at 0.8
    s2 = [1] * 30 + [0] * 10  # good, then collapses: the last window fails
    assert stable_at(s2, 20, 0.8) is None
    assert stable_at([1] * 10, 20, 0.8) is None  # shorter than one window


def test_session_metrics_efficiency_over_the_last_30():
    n = 40
    m = session_metrics([1] * n, [28] * 10 + [14] * 30, [14] * n, [1.0] * n)
    assert m["last30_steps"] == 14 and m["last30_steps_ratio"] == 1.0
    assert m["stable_at"] == 0 and m["stable_success_rate"] == 1.0
    nan = session_metrics([1, 0], [5, 9], [float("nan")] * 2, [0.0, 1.0])
    assert math.isnan(nan["last30_steps_ratio"]) and nan["mean_return"] == 0.5
