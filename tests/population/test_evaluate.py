"""Batched population evaluation equals a loop over materialised members, for every layer."""

import pytest
import torch
from torch.func import functional_call

from spikeopt.config import Config, ConfigError, apply
from spikeopt.functional.loss import Loss, make_loss
from spikeopt.nn import build_model
from spikeopt.population import (
    Offsets,
    Perturbation,
    chunk_size,
    evaluate,
    full_rank,
    materialize,
    supports,
)
from spikeopt.population.layers import Context, snn_forward
from spikeopt.population.noise import Noise, perturbed

ARCHS = {
    "mlp": {"model.hidden": [16]},
    "mlp-li": {"model.hidden": [16], "model.readout": "li", "loss.name": "ce_mean"},
    "mlp2-rate-reg": {"model.hidden": [12, 10], "loss.rate_reg": 1.0, "loss.name": "mse_count"},
    "mlp-zero-reset": {"model.hidden": [16], "neuron.reset": "zero", "neuron.v_rest": 0.1},
    "learn-tau-threshold": {"model.hidden": [16], "neuron.learn_tau": True,
                            "neuron.learn_threshold": True},
    "rsnn": {"model.arch": "rsnn", "model.hidden": [12], "model.readout": "li",
             "loss.name": "ce_max"},
    "rsnn-slow-readout": {"model.arch": "rsnn", "model.hidden": [12], "model.readout": "li",
                          "neuron.tau_m": 2.0, "model.readout_tau": 40.0,
                          "loss.name": "ce_mean"},
    "conv-bn": {"model.arch": "conv", "model.channels": [4], "model.hidden": [8],
                "model.norm": "batch"},
    "conv2-max": {"model.arch": "conv", "model.channels": [4, 3], "model.hidden": [8],
                  "model.pool": "max", "model.neurons_per_class": 2},
}  # fmt: skip


def _setup(arch, encoding, seed=0):
    torch.manual_seed(seed)
    cfg = apply(Config(), ARCHS[arch])
    model = build_model(cfg, (1, 8, 8), 10).double()
    loss = make_loss(cfg.loss, cfg.model.neurons_per_class)
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    if encoding == "static":  # stride-0 time axis: the shared current is computed once
        xt = (3 * x).unsqueeze(1).expand(6, 5, 1, 8, 8)
    else:
        xt = (torch.rand(6, 5, 1, 8, 8, dtype=torch.float64) < x.unsqueeze(1)).double()
    return model, loss, (xt, torch.randint(0, 10, (6,)))


def _member_loop(model, loss, pert, batch):
    """The naive reference: materialise each member's weights and run the plain model."""
    out = []
    for m in range(pert.population):
        with torch.no_grad():
            spikes, mems = functional_call(model, materialize(model, pert, m), (batch[0],))
            out.append(-loss(spikes, mems, batch[1])[0])
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["lowrank", "full", "table"])
@pytest.mark.parametrize("encoding", ["static", "rate"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_batched_fitness_equals_member_loop(arch, encoding, mode):
    model, loss, batch = _setup(arch, encoding)
    assert supports(model)
    pert = Perturbation(population=10, sigma=0.1, rank=2, mode=mode, seed=3, generation=1)
    fitness = evaluate(model, pert, batch, loss, chunk=4)  # chunks of 4, 4, 2
    expected = _member_loop(model, loss, pert, batch)
    torch.testing.assert_close(fitness, expected, rtol=1e-9, atol=1e-9)
    assert fitness.unique().numel() > 1  # the members really differ


@pytest.mark.parametrize("encoding", ["static", "rate"])
@pytest.mark.parametrize("chunk", [4, 5])
def test_table_members_read_their_first_layer_product_from_one_shared_product(encoding, chunk):
    # a table of 62 rows of the first weight (16 x 64) and 8 pairs x 16 rows: x T^T once,
    # each pair's slice of it; chunks of 5 split pairs and take the per-pair product instead
    model, loss, batch = _setup("mlp", encoding)
    pert = Perturbation(population=16, sigma=0.1, mode="table", seed=3, generation=1, table=4000)
    params = [p for _, p in perturbed(model)]
    noise = Noise(params, pert)
    first = noise.members(0, 4)
    assert first.rows(params[0]) is not None
    windows = Noise(params, pert).pairs(0, 2)[0]  # asked for, the rows are the same windows
    torch.testing.assert_close(first.pair(params[0]), windows, rtol=0, atol=0)
    torch.testing.assert_close(first[params[0]][1], -windows[0], rtol=0, atol=0)
    fitness = evaluate(model, pert, batch, loss, chunk=chunk)
    torch.testing.assert_close(fitness, _member_loop(model, loss, pert, batch), rtol=1e-9,
                               atol=1e-9)  # fmt: skip
    assert fitness.unique().numel() == 16


def test_eval_mode_batch_norm_uses_running_statistics():
    model, loss, batch = _setup("conv-bn", "static")
    bn = model.layers[0].bn
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    pert = Perturbation(population=6, sigma=0.1, rank=2, seed=5)
    fitness = evaluate(model, pert, batch, loss, chunk=4)
    expected = _member_loop(model, loss, pert, batch)
    torch.testing.assert_close(fitness, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("arch", ["mlp2-rate-reg", "rsnn", "conv2-max"])
def test_every_layer_matches_the_plain_model(arch):
    model, _, (x, _) = _setup(arch, "rate")
    pert = Perturbation(population=4, sigma=0.1, rank=1, seed=1)
    chunk = Noise([p for _, p in perturbed(model)], pert).members(0, 4)
    spikes, mems = snn_forward(model, x, Context(chunk), keep_hidden=True)
    for m in range(4):
        with torch.no_grad():
            ref_s, ref_v = functional_call(model, materialize(model, pert, m), (x,))
        for layer, (s, v) in enumerate(zip(ref_s, ref_v)):
            torch.testing.assert_close(spikes[layer][m], s, rtol=1e-9, atol=1e-9)  # LI: v
            torch.testing.assert_close(mems[layer][m], v, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("arch", ["mlp-li", "rsnn", "conv-bn"])
def test_explicit_offsets_equal_member_loop(arch):
    model, loss, batch = _setup(arch, "rate")
    params = [p for _, p in perturbed(model)]
    g = torch.Generator().manual_seed(0)
    deltas = [0.1 * torch.randn(5, *p.shape, generator=g, dtype=p.dtype) for p in params]
    fitness = evaluate(model, Offsets(params, deltas), batch, loss, chunk=2)
    names = [n for n, _ in perturbed(model)]
    expected = []
    for m in range(5):
        member = {n: p + d[m] for n, p, d in zip(names, params, deltas)}
        with torch.no_grad():
            spikes, mems = functional_call(model, member, (batch[0],))
        expected.append(-loss(spikes, mems, batch[1])[0])
    torch.testing.assert_close(fitness, torch.stack(expected), rtol=1e-9, atol=1e-9)


def test_offsets_are_checked_against_the_model():
    model, loss, batch = _setup("mlp", "rate")
    params = [p for _, p in perturbed(model)]
    with pytest.raises(ValueError, match="offset shape"):
        Offsets(params, [torch.zeros(3, *p.shape[::-1], dtype=p.dtype) for p in params])
    other = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="perturbed"):
        evaluate(model, Offsets(other, [torch.zeros(2, *p.shape) for p in other]), batch, loss)


@pytest.mark.parametrize("arch", ["mlp2-rate-reg", "rsnn", "conv-bn"])
def test_per_member_inputs_equal_each_member_on_its_own_input(arch):
    model, _, (x, _) = _setup(arch, "rate")
    pert = Perturbation(population=4, sigma=0.1, seed=2)
    noise = Noise([p for _, p in perturbed(model)], pert)
    xs = torch.stack([x.roll(m, 0) for m in range(4)])  # member m sees its own batch
    spikes, mems = snn_forward(model, xs, Context(noise.members(0, 4)), per_member=True)
    for m in range(4):
        ref_s, ref_v = snn_forward(model, xs[m], Context(noise.members(m, m + 1)))
        torch.testing.assert_close(spikes[-1][m], ref_s[-1][0], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(mems[-1][m], ref_v[-1][0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("arch", ["mlp2-rate-reg", "conv2-max"])
def test_dropout_mask_is_shared_by_all_members(arch):
    model, loss, batch = _setup(arch, "rate")
    model.dropout = 0.3  # training mode: one mask per sample and neuron, for every member
    pert = Perturbation(population=6, sigma=0.1)
    torch.manual_seed(123)
    fitness = evaluate(model, pert, batch, loss, chunk=4)
    expected = []
    for m in range(6):
        torch.manual_seed(123)  # the plain model draws the same mask from the same RNG state
        with torch.no_grad():
            spikes, mems = functional_call(model, materialize(model, pert, m), (batch[0],))
            expected.append(-loss(spikes, mems, batch[1])[0])
    torch.testing.assert_close(fitness, torch.stack(expected), rtol=1e-9, atol=1e-9)


def test_static_input_current_is_computed_once_per_generation():
    model, _, (x, _) = _setup("mlp", "static")
    noise = Noise([p for _, p in perturbed(model)], Perturbation(8, 0.1))
    ctx = Context(noise.members(0, 4))
    snn_forward(model, x, ctx)
    base = ctx.shared[("linear", id(model.layers[0].fc))]
    assert base.shape == (6, 16)  # (B, N): one step, not T steps
    snn_forward(model, x, Context(noise.members(4, 8), ctx.shared))
    assert ctx.shared[("linear", id(model.layers[0].fc))] is base  # reused by the next chunk


def test_chunking_does_not_change_fitness():
    model, loss, batch = _setup("mlp", "rate")
    pert = Perturbation(population=20, sigma=0.1, seed=5)
    whole = evaluate(model, pert, batch, loss, chunk=20)
    for chunk in (2, 6, 0):
        assert torch.equal(evaluate(model, pert, batch, loss, chunk=chunk), whole)


def test_auto_chunk_size_fits_the_reference_network_and_the_budget():
    cfg = apply(Config(), {"model.hidden": [256]})
    model = build_model(cfg, (784,), 10)  # the reference network: 784-256-10, T=25, B=128
    x = torch.rand(128, 784).unsqueeze(1).expand(128, 25, 784)
    n = chunk_size(model, x, 512, memory_mb=1024)
    assert 32 <= n <= 64 and n % 2 == 0
    assert chunk_size(model, x, 64, memory_mb=1024) == 32  # two equal chunks, not 48 + 16
    assert chunk_size(model, x[:4], 512, memory_mb=1024) == 64  # never beyond cache-friendly
    assert chunk_size(model, x, 512, memory_mb=1) == 2
    assert chunk_size(model, x, 8, memory_mb=1e6) == 8
    assert chunk_size(model, x[:4], 512, memory_mb=1024, full_rank=True) == 16  # whole weights
    assert full_rank(Perturbation(4, 0.1, mode="table")) and full_rank(
        Perturbation(4, 0.1, mode="full")
    )
    assert not full_rank(Perturbation(4, 0.1))


def test_nonfinite_members_pass_through_as_nan():
    model, loss, batch = _setup("mlp-li", "static")
    with torch.no_grad():
        model.layers[-1].fc.bias[0] = float("nan")
    fitness = evaluate(model, Perturbation(4, 0.1), batch, loss)
    assert torch.isnan(fitness).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"population": 7}, "even"), ({"population": 0}, "even"), ({"sigma": 0.0}, "sigma"),
     ({"rank": 0}, "rank"), ({"mode": "dense"}, "lowrank, full")],
)  # fmt: skip
def test_bad_perturbation_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Perturbation(**{"population": 4, "sigma": 0.1, **kwargs})


def test_loss_with_population_axis_is_used_as_is():
    model, _, batch = _setup("mlp-li", "static")
    loss = Loss("ce_mean")
    fitness = evaluate(model, Perturbation(6, 0.05), batch, loss)
    assert fitness.shape == (6,) and fitness.dtype == torch.float64
