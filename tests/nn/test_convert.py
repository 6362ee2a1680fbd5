"""ANN -> SNN conversion: the percentile scales, the rates they give, and what is refused."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from spikeopt.config import Config, ConfigError, apply
from spikeopt.nn.convert import convert, layer_scales, relu_activations, stages
from spikeopt.nn.layers import ConvLIF, LinearLIF
from spikeopt.nn.models import CNN, SNN, build_model


def _cfg(**overrides: object) -> Config:
    return apply(Config(), {"model.arch": "cnn", "method.name": "conversion", **overrides})


def _mlp(n_in: int = 6, hidden: tuple[int, ...] = (5, 4), seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    return CNN((n_in,), 3, [], list(hidden), 3).eval()


def test_scales_are_the_percentile_of_positive_relu_activations():
    ann = CNN((3,), 2, [], [3], 3)
    with torch.no_grad():
        first = ann.body[1]
        first.weight.copy_(torch.eye(3))
        first.bias.zero_()
    x = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0], [7.0, 8.0, 9.0]])
    positive = np.array([1.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.0])  # ReLU(x), zeros left out
    for q in (50.0, 90.0, 99.9, 100.0):
        # the same values split over two batches: one percentile over all of them
        scales = layer_scales(ann, [x[:2], x[2:]], q)
        assert scales == pytest.approx([np.percentile(positive, q)])


def test_spike_rates_approach_the_normalised_relu_activations_as_t_grows():
    ann = _mlp()
    x = torch.rand(64, 6) * 2 - 0.5
    cfg = _cfg(**{"model.channels": [], "model.hidden": [5, 4], "conversion.percentile": 100.0})
    snn, snn_cfg = convert(ann, cfg, [x], (6,), 3)
    scales = layer_scales(ann, [x], 100.0)
    target = [a / s for a, s in zip(relu_activations(ann, x), scales)]  # in [0, 1]: q = 100
    with torch.no_grad():
        logits = ann.body(x)
    errors = []
    for steps in (8, 32, 128, 512):
        with torch.no_grad():
            spikes, mems = snn(x[:, None].expand(-1, steps, -1))
        rates = [s.mean(1) for s in spikes[:-1]]
        errors.append([float((r - t).abs().mean()) for r, t in zip(rates, target)])
        readout = mems[-1][:, -1] / steps  # the integrator's last membrane: mean logits
        if steps == 512:
            assert float((readout - logits).abs().max()) < 0.05
    errors_arr = np.array(errors)
    assert errors_arr[-1].max() < 0.01  # within 1 % of the rate at T = 512
    assert (np.diff(errors_arr, axis=0) <= 1e-6).all()  # and shrinking with T, per layer
    assert snn_cfg.neuron.reset == "subtract" and snn_cfg.model.arch == "mlp"


def test_conv_batch_norm_is_folded_and_the_model_rebuilds_from_its_config():
    torch.manual_seed(1)
    ann = CNN((2, 8, 8), 3, [4], [6], 3, pool="avg")
    bn = ann.body[1]
    assert isinstance(bn, nn.BatchNorm2d)
    with torch.no_grad():  # stats of a trained network, not the identity of a fresh one
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    ann.eval()
    x = torch.randn(16, 2, 8, 8)
    cfg = _cfg(**{"model.channels": [4], "model.hidden": [6], "model.cnn_pool": "avg"})
    snn, snn_cfg = convert(ann, cfg, [x], (2, 8, 8), 3)
    first = snn.layers[0]
    assert isinstance(first, ConvLIF) and first.bn is None and first.pool == "avg"
    scale = layer_scales(ann, [x], cfg.conversion.percentile)[0]
    with torch.no_grad():
        expected = ann.body[1](ann.body[0](x)) / scale
        assert torch.allclose(first.current(x), expected, atol=1e-5)
    rebuilt = build_model(snn_cfg, (2, 8, 8), 3)
    rebuilt.load_state_dict(snn.state_dict())  # the config describes the converted network
    assert isinstance(rebuilt, SNN) and isinstance(rebuilt.layers[-1], LinearLIF)
    assert rebuilt.layers[-1].li


def test_refuses_what_it_cannot_map():
    cfg = _cfg()
    spiking = build_model(dataclasses.replace(cfg, model=Config().model), (6,), 3)
    with pytest.raises(ConfigError, match="model.arch=cnn"):
        stages(spiking)
    with pytest.raises(ConfigError, match="model.cnn_pool=avg"):
        stages(CNN((1, 8, 8), 3, [4], [6], 3, pool="max"))
    odd = _mlp()
    odd.body[2] = nn.Sigmoid()
    with pytest.raises(ConfigError, match="cannot map a Sigmoid"):
        convert(odd, cfg, [torch.rand(4, 6)], (6,), 3)
    with pytest.raises(ConfigError, match="at least one hidden layer"):
        stages(CNN((6,), 3, [], [], 3))
    with pytest.raises(ConfigError, match="neuron.v_threshold > 0"):
        bad = _cfg(**{"model.channels": [], "neuron.v_threshold": -1.0})
        convert(_mlp(), bad, [torch.rand(4, 6)], (6,), 3)
