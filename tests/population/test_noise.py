"""Noise: antithetic, regenerated from (seed, generation, member), low-rank members exact,
and the search-gradient estimate matches true gradients of smooth functions."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeopt.config import ConfigError, NeuronConfig
from spikeopt.functional.loss import Loss
from spikeopt.nn.layers import ConvLIF, LinearLIF
from spikeopt.nn.models import SNN
from spikeopt.population import Noise, Perturbation, estimate, evaluate, materialize, perturbed
from spikeopt.population.conv import conv_current
from spikeopt.population.layers import Context, linear_current
from spikeopt.population.noise import noise_table


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3)).double()


def test_members_come_in_antithetic_pairs():
    model = _net()
    pert = Perturbation(population=6, sigma=0.3, rank=2)
    centre = dict(model.named_parameters())
    for k in range(3):
        plus, minus = materialize(model, pert, 2 * k), materialize(model, pert, 2 * k + 1)
        for name, p in centre.items():
            torch.testing.assert_close(plus[name] - p, -(minus[name] - p))
            assert not torch.equal(plus[name], p)


def test_noise_is_a_function_of_seed_generation_and_member():
    params = [p for _, p in perturbed(_net())]
    pert = Perturbation(population=40, sigma=0.1, seed=7, generation=3)
    whole = Noise(params, pert).members(0, 40)
    part = Noise(params, pert).members(13, 29)  # crosses noise blocks, starts mid-pair
    for p in params:
        torch.testing.assert_close(part.weights(p), whole.weights(p)[13:29], rtol=0, atol=0)
    for other in (
        Perturbation(40, 0.1, seed=8, generation=3),
        Perturbation(40, 0.1, seed=7, generation=4),
    ):
        assert not torch.equal(
            Noise(params, other).members(0, 2).weights(params[0]), whole.weights(params[0])[:2]
        )


@pytest.mark.parametrize("mode", ["lowrank", "full", "table"])
def test_every_weight_gets_unit_variance_noise(mode):
    w = torch.zeros(30, 20)
    pert = Perturbation(population=400, sigma=1.0, rank=3, mode=mode)
    eps = Noise([w], pert).members(0, 400).weights(w)
    assert abs(eps.var().item() - 1.0) < 0.05  # sigma means the same in both modes
    assert eps.flatten(1).T.corrcoef()[0, 1].abs() < 0.2  # entries are uncorrelated


def test_table_members_are_windows_of_one_shared_table():
    params = [p for _, p in perturbed(_net())]
    n = sum(p.numel() for p in params)
    pert = Perturbation(population=40, sigma=0.1, mode="table", seed=7, generation=3, table=500)
    table = noise_table(7, 500, params[0].device, params[0].dtype)
    whole = Noise(params, pert).members(0, 40)
    part = Noise(params, pert).members(13, 29)  # crosses blocks, starts mid-pair: signed now
    starts = []
    for m in range(0, 40, 2):
        flat = torch.cat([((whole.weights(p)[m] - p) / pert.sigma).flatten() for p in params])
        hits = [o for o in range(500 - n + 1) if torch.allclose(table[o : o + n], flat)]
        assert len(hits) == 1  # one contiguous window of the table per pair
        starts.append(hits[0])
    assert len(set(starts)) == 20  # pairs land at different offsets
    assert all(o % 5 == 0 for o in starts)  # whole rows of the first weight (4 x 5)
    for p in params:
        torch.testing.assert_close(part.weights(p), whole.weights(p)[13:29], rtol=0, atol=0)
        torch.testing.assert_close(whole[p][0::2], whole.pair(p), rtol=0, atol=0)  # +e_k
        torch.testing.assert_close(whole[p][1::2], -whole.pair(p), rtol=0, atol=0)  # -e_k
    assert part.pair(params[0]) is None  # not whole pairs: no pair view to hand out


def test_table_size_errors_name_the_fix():
    params = [p for _, p in perturbed(_net())]
    with pytest.raises(ConfigError, match="es.table_size >= 39"):
        Noise(params, Perturbation(4, 0.1, mode="table", table=20))
    with pytest.raises(ConfigError, match="es.table_size must be >= 0"):
        Perturbation(4, 0.1, mode="table", table=-1)


def _lowrank_weight(p, chunk, m):
    """``W + sigma * A_m B_m^T``, materialised by hand from the factors."""
    a, b = chunk[p]
    return p + chunk.sigma * (a[m] @ b[m].T).view_as(p)


def test_lowrank_member_of_a_linear_layer_equals_materialised_weights():
    torch.manual_seed(0)
    fc = nn.Linear(7, 5).double()
    chunk = Noise([fc.weight, fc.bias], Perturbation(6, 0.2, rank=2)).members(0, 6)
    x = torch.randn(9, 7, dtype=torch.float64)
    shared = linear_current(fc, x, True, Context(chunk))  # (c, M, N) from the shared input
    per_member = linear_current(fc, x.expand(6, 9, 7), False, Context(chunk))
    for m in range(6):
        w, b = _lowrank_weight(fc.weight, chunk, m), chunk.weights(fc.bias)[m]
        torch.testing.assert_close(shared[m], x @ w.T + b)
        torch.testing.assert_close(per_member[m], x @ w.T + b)


def test_lowrank_member_of_a_conv_layer_equals_materialised_kernels():
    torch.manual_seed(0)
    layer = ConvLIF(3, 4, 3, NeuronConfig(), "none", "none", (6, 6)).double()
    conv = layer.conv
    chunk = Noise([conv.weight, conv.bias], Perturbation(4, 0.2, rank=2)).members(0, 4)
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    shared = conv_current(conv, x, True, Context(chunk))  # r-channel conv, then a 1x1 mix
    per_member = conv_current(conv, x.expand(4, *x.shape), False, Context(chunk))
    for m in range(4):
        w, b = _lowrank_weight(conv.weight, chunk, m), chunk.weights(conv.bias)[m]
        torch.testing.assert_close(shared[m], F.conv2d(x, w, b, padding=1))
        torch.testing.assert_close(per_member[m], F.conv2d(x, w, b, padding=1))


class Quadratic(nn.Module):
    """A smooth test function of (W, b): its outputs go to a squared-error 'loss'."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3).double()

    def forward(self, x):
        out = self.fc(x) ** 2 + self.fc(x)
        return [out], [out]


def _squared(spikes, mems, y):
    return (spikes[-1] - 1.0).pow(2).mean((-2, -1)), None


def _cosine(a, b):
    a = torch.cat([t.flatten() for t in a])
    b = torch.cat([t.flatten() for t in b])
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("mode", ["lowrank", "full", "table"])
def test_estimate_matches_the_true_gradient_of_a_smooth_function(mode):
    torch.manual_seed(0)
    model, x = Quadratic(), torch.randn(16, 4, dtype=torch.float64)
    loss, _ = _squared(*model(x), None)
    params = [p for _, p in perturbed(model)]
    true = torch.autograd.grad(-loss, params)  # ascent direction of fitness = -loss
    pert = Perturbation(population=1000, sigma=1e-3, rank=1, mode=mode)
    fitness = evaluate(model, pert, (x, torch.zeros(16)), _squared)  # the vmap fallback
    est = estimate(params, pert, fitness - fitness.mean())
    assert _cosine(est, true) > 0.9
    ratio = (
        torch.cat([e.flatten() for e in est]).norm() / torch.cat([t.flatten() for t in true]).norm()
    )
    assert 0.7 < ratio < 1.6  # unbiased: the scale is right too


def test_estimate_through_the_batched_path_matches_autograd():
    """An LI readout is linear in its weights, so ce_mean is smooth: compare with autograd."""
    torch.manual_seed(0)
    model = SNN([LinearLIF(6, 4, NeuronConfig(), li=True)]).double()
    x = torch.randn(32, 6, dtype=torch.float64).unsqueeze(1).expand(32, 5, 6)
    y, loss = torch.randint(0, 4, (32,)), Loss("ce_mean")
    spikes, mems = model(x)
    params = [p for _, p in perturbed(model)]
    true = torch.autograd.grad(-loss(spikes, mems, y)[0], params)
    pert = Perturbation(population=1000, sigma=1e-2, rank=1)
    fitness = evaluate(model, pert, (x, y), loss)
    assert _cosine(estimate(params, pert, fitness), true) > 0.9


def test_estimate_is_linear_in_the_weights_and_needs_the_full_population():
    params = [p for _, p in perturbed(_net())]
    pert = Perturbation(population=8, sigma=0.5)
    w = torch.randn(8, dtype=torch.float64)
    a, b = estimate(params, pert, w), estimate(params, pert, 2 * w)
    for x, y in zip(a, b):
        torch.testing.assert_close(2 * x, y)
    with pytest.raises(ValueError, match=r"\(8,\)"):
        estimate(params, pert, w[:6])


def test_estimate_by_hand_for_one_pair():
    torch.manual_seed(0)
    model = _net()
    params = [p for _, p in perturbed(model)]
    pert = Perturbation(population=2, sigma=0.5, rank=2)
    (g,) = estimate(params[:1], pert, torch.tensor([1.0, 0.0], dtype=torch.float64))
    eps = (materialize(model, pert, 0)["0.weight"] - params[0]) / pert.sigma
    torch.testing.assert_close(g, eps / (2 * pert.sigma))  # 1/(P sigma) * (w0 - w1) eps
