"""Fluctuation-driven init: every layer's free membrane hits its target, no layer is silent."""

import math

import pytest
import torch
from torch import nn

from spikeopt.config import Config, ConfigError, DataConfig, NeuronConfig, apply
from spikeopt.functional.neuron import LIFParams, li_sequence
from spikeopt.nn import ConvLIF, LinearLIF, RecurrentLIF, build_model
from spikeopt.nn.init import fluct_init
from spikeopt.tasks.datasets import load_dataset

T = 6
BETA = math.exp(-1 / 20)  # neuron.tau_m = 20, dt = 1


@pytest.fixture(scope="module")
def digits():
    """Digits images (N, 1, 8, 8): in [0, 1], and standardised (signed)."""
    raw = load_dataset(DataConfig(name="digits")).x_train
    return {
        "raw": raw,
        "normalized": load_dataset(DataConfig(name="digits", normalize=True)).x_train,
    }


def _batches(x, n=4, size=128):
    """Repeat-encoded batches (B, T, 1, 8, 8) with labels, as a loader yields them."""
    return [
        (x[i : i + size, None].expand(-1, T, *x.shape[1:]), None) for i in range(0, n * size, size)
    ]


def _model(arch, readout="li", hidden=(64,), seed=0):
    cfg = {"model.arch": arch, "model.hidden": list(hidden), "model.readout": readout}
    if arch == "conv":
        cfg |= {"model.channels": [8, 16], "model.norm": "batch", "model.hidden": []}
    cfg = apply(Config(), cfg)
    torch.manual_seed(seed)
    return build_model(cfg, (1, 8, 8), n_classes=10)


def _free_membranes(model, x):
    """Per layer: free membrane (B, T, N) -- its current through the LI dynamics -- and spikes."""
    inputs = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for layer in model.layers
    ]
    with torch.no_grad():
        spikes, _ = model(x)
        for h in hooks:
            h.remove()
        return [_free(layer, h, s) for layer, h, s in zip(model.layers, inputs, spikes)]


def _free(layer, h, s):
    """One layer's free membrane and spikes from its input ``h``."""
    h = h.contiguous()  # the materialised time axis: one current per step
    if isinstance(layer, ConvLIF):
        cur = layer.current(h.flatten(0, 1)).flatten(1).unflatten(0, h.shape[:2])
    else:
        cur = layer.fc(h)
    if isinstance(layer, RecurrentLIF):  # I[t] = W x[t] + V s[t-1]
        cur = cur + torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], 1) @ layer.rec.weight.t()
    return li_sequence(cur, LIFParams(beta=BETA)), s


def _check(model, stats, batches, conv=False):
    """Fit on ``batches[:2]``: its stats are the layers' own; on the held-out rest, targets are
    met within 10 % of sigma_U and every hidden layer fires, < 10 % of its neurons never."""
    model.eval()
    fit, held = (torch.cat([b[0] for b in part]) for part in (batches[:2], batches[2:]))
    layers = list(stats.values())
    for (u, _), st in zip(_free_membranes(model, fit), layers):
        assert float(u.mean()) == pytest.approx(st["mean"], abs=1e-3)
        assert float(u.std()) == pytest.approx(st["std"], rel=1e-3)
    for i, ((u, s), st) in enumerate(zip(_free_membranes(model, held), layers)):
        mean, std = float(u.mean()), float(u.std())
        assert abs(mean - st["target_mean"]) <= 0.1 * st["target_std"], (i, mean, st)
        assert abs(std / st["target_std"] - 1) <= 0.1, (i, std, st)
        if i == len(layers) - 1:
            continue
        assert s.mean() > 0, f"hidden layer {i} is silent"
        silent = s.sum((0, 1)) == 0
        if conv:
            # Neurons over the empty borders of digits get (almost) no input, whatever the
            # weights; count those whose free membrane does fluctuate.
            silent = silent[u.std((0, 1)) >= 0.5 * st["target_std"]]
        assert silent.double().mean() < 0.1, (i, float(silent.double().mean()))


@pytest.mark.parametrize("data", ["raw", "normalized"])
def test_mlp_hits_targets_on_digits(digits, data):
    model = _model("mlp", hidden=(64, 32))
    batches = _batches(digits[data])
    stats = fluct_init(model, batches, n_batches=2)
    assert list(stats) == ["layers.0", "layers.1", "layers.2"]
    assert stats["layers.2"]["target_std"] == 1.0 and stats["layers.0"]["target_mean"] == 0.0
    _check(model, stats, batches)


def test_mean_carrier_weights_for_nonnegative_input_bias_for_signed(digits):
    """sigma_u = 0.6, xi = 1 puts the mean at +0.4 theta: someone must carry it."""
    for data in ("raw", "normalized"):
        model = _model("mlp", readout="lif")
        batches = _batches(digits[data])
        stats = fluct_init(model, batches, xi_target=1.0, sigma_u=0.6, n_batches=2)
        assert stats["layers.0"]["target_mean"] == pytest.approx(0.4)
        _check(model, stats, batches)
        fc = model.layers[0].fc
        if data == "raw":  # pixels >= 0: the weight mean carries mu_U, the bias is zero
            assert fc.weight.detach().mean() > 0 and torch.all(fc.bias == 0)
        else:  # standardised pixels: a common bias carries it, weights are zero-mean
            assert torch.all(fc.bias == fc.bias[0]) and fc.bias[0] > 0
            assert abs(float(fc.weight.detach().mean())) < 0.1 * float(fc.weight.detach().std())
        assert torch.all(model.layers[1].fc.bias == 0)  # spikes are non-negative


def test_rsnn_hits_targets_with_zero_mean_recurrent_weights(digits):
    model = _model("rsnn")
    batches = _batches(digits["raw"])
    stats = fluct_init(model, batches, alpha=0.8, n_batches=2)
    _check(model, stats, batches)
    rec = model.layers[0].rec.weight.detach()
    assert rec.abs().sum() > 0 and abs(float(rec.mean())) < 0.1 * float(rec.std())


def test_conv_batchnorm_hits_targets_and_eval_matches_train(digits):
    model = _model("conv")
    batches = _batches(digits["raw"])
    stats = fluct_init(model, batches, n_batches=2)
    assert [type(m) for m in model.layers] == [ConvLIF, ConvLIF, LinearLIF]
    _check(model, stats, batches, conv=True)
    layer, x = model.layers[0], batches[0][0][:, 0]
    with torch.no_grad():  # running stats = the measured ones: train-mode BN barely differs
        layer.eval()
        evaluated = layer.current(x)
        layer.train()
        trained = layer.current(x)
    assert torch.allclose(evaluated, trained, atol=0.05 * float(evaluated.std()))


def test_any_module_that_calls_layers_in_order(digits):
    """Hooks find the layers: no SNN container needed; training mode is left as it was."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = LinearLIF(32, 10, NeuronConfig(), li=True)  # registered first, called last
            self.hidden = LinearLIF(64, 32, NeuronConfig())

        def forward(self, x):
            return self.out(self.hidden(x.flatten(2))[0])

    torch.manual_seed(0)
    net = Net().train()
    batches = _batches(digits["raw"])
    stats = fluct_init(net, batches, n_batches=2)
    assert list(stats) == ["hidden", "out"] and net.training
    assert stats["hidden"]["std"] == pytest.approx(0.5, rel=0.1) and stats["hidden"]["dead"] < 0.1
    assert stats["out"]["std"] == pytest.approx(1.0, rel=0.1) and stats["out"]["readout"] == 1.0


def test_deterministic_given_batches_and_seed(digits):
    batches = _batches(digits["raw"], n=1)
    a, b = _model("mlp"), _model("mlp")
    torch.manual_seed(1)
    fluct_init(a, batches)
    torch.manual_seed(1)
    fluct_init(b, iter(batches))  # any iterable
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_batches": 0}, "fluct_batches"),
        ({"xi_target": float("nan")}, "fluct_xi"),
        ({"xi_target": float("inf")}, "fluct_xi"),
        ({"alpha": 0.0}, "fluct_alpha"),
        ({"alpha": 1.5}, "fluct_alpha"),
        ({"sigma_u": -1.0}, "sigma_u"),
        ({"xi_target": 0.0}, "default 1/xi needs xi > 0"),
    ],
)
def test_bad_arguments_name_the_key(digits, kw, match):
    with pytest.raises(ConfigError, match=match):
        fluct_init(_model("mlp"), _batches(digits["raw"], n=1), **kw)


def test_empty_loader_and_model_without_spiking_layers(digits):
    with pytest.raises(ConfigError, match="yielded no batches"):
        fluct_init(_model("mlp"), [])
    with pytest.raises(ConfigError, match="no LinearLIF/RecurrentLIF/ConvLIF"):
        fluct_init(nn.Sequential(nn.Linear(64, 10)), _batches(digits["raw"], n=1))
