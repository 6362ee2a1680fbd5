"""Fitness shaping: ranks, z-scores, raw; non-finite fitness always ranks worst."""

import pytest
import torch

from spikeopt.config import ConfigError
from spikeopt.population import SHAPINGS, get_shaping, tie_fraction
from spikeopt.population.shaping import centered_rank, nes_utility, raw, zscore

NAN, INF = float("nan"), float("inf")


def test_centered_rank_is_ordered_centred_and_bounded():
    f = torch.tensor([3.0, -1.0, 10.0, 0.5])
    w = centered_rank(f)
    assert torch.equal(w.argsort(), f.argsort())
    assert w.min() == -0.5 and w.max() == 0.5 and abs(float(w.sum())) < 1e-6


def test_centered_rank_ties_share_their_average_rank():
    w = centered_rank(torch.tensor([1.0, 2.0, 2.0, 3.0]))
    assert w[1] == w[2] and torch.allclose(w, torch.tensor([-0.5, 0.0, 0.0, 0.5]))
    assert torch.equal(centered_rank(torch.full((6,), 2.3)), torch.zeros(6))


@pytest.mark.parametrize("name", sorted(SHAPINGS))
def test_nonfinite_fitness_ranks_worst(name):
    f = torch.tensor([NAN, 1.0, INF, 2.0, -INF, 0.5], dtype=torch.float64)
    w = get_shaping(name)(f)
    assert torch.isfinite(w).all()
    bad, good = w[[0, 2, 4]], w[[1, 3, 5]]
    assert bad.max() <= good.min()
    assert not get_shaping(name)(torch.full((4,), NAN)).any()  # all diverged: no update at all


def test_zscore_and_raw():
    f = torch.tensor([1.0, 2.0, 3.0, 6.0])
    z = zscore(f)
    assert abs(float(z.mean())) < 1e-6 and float(z.std()) == pytest.approx(1.0)
    assert torch.equal(zscore(torch.ones(3)), torch.zeros(3))
    assert torch.allclose(raw(f), f - 3.0)


def test_unknown_shaping_lists_the_valid_names():
    with pytest.raises(ConfigError, match="centered_rank, nes_utility, zscore, raw"):
        get_shaping("ranks")


def test_tie_fraction():
    assert tie_fraction(torch.tensor([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert tie_fraction(torch.tensor([1.0, 1.0, 1.0, 4.0])) == 0.5


def test_nes_utilities_weight_the_better_half_and_sum_to_zero():
    f = torch.tensor([0.3, -1.0, 2.0, float("nan"), 0.1, 5.0, -0.2, 1.0], dtype=torch.float64)
    u = nes_utility(f)
    assert float(u.sum()) == pytest.approx(0.0, abs=1e-12)
    order = torch.argsort(u, descending=True)
    assert order[:4].tolist() == [5, 2, 7, 0]  # the better half, best first
    assert bool((u[[1, 3, 4, 6]] == -1 / 8).all())  # the rest only pay the baseline
    assert u[3] == u.min()  # NaN ranks worst
