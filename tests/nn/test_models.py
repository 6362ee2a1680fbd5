"""Every architecture honours the model contract; static inputs take the one-current path."""

import math

import pytest
import torch

from spikeopt.config import Config, ConfigError, apply
from spikeopt.functional.surrogate import get_surrogate
from spikeopt.nn import ARCHS, LIF, LinearLIF, build_model, n_params, set_surrogate
from spikeopt.tasks.encoders import repeat

SHAPES = {"mlp": (1, 8, 8), "conv": (1, 8, 8), "rsnn": (3,), "cnn": (1, 8, 8)}


def _model(arch, **kw):
    cfg = apply(
        Config(), {"model.arch": arch, "model.hidden": [16], "model.channels": [4, 6], **kw}
    )
    torch.manual_seed(0)
    return build_model(cfg, SHAPES[arch], n_classes=3)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a in SHAPES])  # s5, gru: test_language
def test_contract_shapes_and_no_state_between_calls(arch):
    model = _model(arch)
    x = torch.rand(2, 5, *SHAPES[arch])
    spikes, mems = model(x)
    assert isinstance(spikes, list) and len(spikes) == len(mems)
    for s, v in zip(spikes, mems):
        assert s.dim() == 3 and s.shape[0] == 2 and s.shape[2] > 0
        assert v.shape[:2] == s.shape[:2]
    assert spikes[-1].shape[-1] == 3
    again, _ = model(x)
    for a, b in zip(spikes, again):
        torch.testing.assert_close(a, b)  # nothing carried over from the first call


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_static_input_gives_same_result_as_materialised_repeat(arch):
    model = _model(arch)
    x = torch.rand(3, *SHAPES[arch])
    static = repeat(x, 6)
    assert static.stride(1) == 0
    s1, v1 = model(static)
    s2, v2 = model(static.contiguous())  # same values, time axis materialised
    for a, b in zip(s1 + v1, s2 + v2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_static_input_computes_the_first_current_once():
    model = _model("mlp")
    seen = []
    first = next(m for m in model.modules() if isinstance(m, LinearLIF))
    first.fc.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    model(repeat(torch.rand(2, 1, 8, 8), 7))
    assert seen == [(2, 64)]  # (B, in) once -- not (B, T, in)
    seen.clear()
    model(repeat(torch.rand(2, 1, 8, 8), 7).contiguous())
    assert seen == [(2, 7, 64)]


def test_population_coding_and_li_readout():
    model = _model("mlp", **{"model.neurons_per_class": 4, "model.readout": "li"})
    spikes, mems = model(torch.rand(2, 3, 1, 8, 8))
    assert spikes[-1].shape == (2, 3, 12)
    torch.testing.assert_close(spikes[-1], mems[-1])  # LI: the trace is its output


def test_readout_tau_sets_only_the_output_layers_decay():
    kw = {"model.readout": "li", "neuron.tau_m": 2.0}
    fast = _model("rsnn", **kw)
    slow = _model("rsnn", **kw, **{"model.readout_tau": 20.0})
    assert slow.layers[0].neuron.params().beta == fast.layers[0].neuron.params().beta
    assert slow.layers[-1].neuron.params().beta == pytest.approx(math.exp(-1 / 20))
    x = torch.rand(2, 6, 3)
    s_fast, v_fast = fast(x)
    s_slow, v_slow = slow(x)
    torch.testing.assert_close(s_slow[0], s_fast[0])  # same weights, same hidden spikes
    # LI readout v[t] = beta v[t-1] + I[t]: recover I from the fast trace, refilter it slowly
    beta = math.exp(-1 / 2)
    current = v_fast[-1] - beta * torch.cat([torch.zeros_like(v_fast[-1][:, :1]),
                                             v_fast[-1][:, :-1]], 1)  # fmt: skip
    v, expected = torch.zeros_like(current[:, 0]), []
    for t in range(6):
        v = math.exp(-1 / 20) * v + current[:, t]
        expected.append(v)
    torch.testing.assert_close(v_slow[-1], torch.stack(expected, 1))


def test_readout_tau_must_not_be_negative():
    cfg = apply(Config(), {"model.arch": "rsnn", "model.readout_tau": -1.0})
    with pytest.raises(ConfigError, match=r"model\.readout_tau must be >= 0"):
        build_model(cfg, (3,), 3)


@pytest.mark.parametrize("scheme", ["default", "kaiming", "xavier"])
def test_init_schemes_and_output_scale(scheme):
    a = _model("mlp", **{"model.init": scheme})
    b = _model("mlp", **{"model.init": scheme, "model.out_scale": 0.01})
    wa, wb = a.layers[-1].fc.weight, b.layers[-1].fc.weight
    torch.testing.assert_close(wb, wa * 0.01)
    assert n_params(a) == n_params(b)


def test_learnable_tau_and_threshold_are_parameters_with_gradients():
    model = _model("mlp", **{"neuron.learn_tau": True, "neuron.learn_threshold": True})
    spikes, mems = model(torch.rand(2, 4, 1, 8, 8))
    (mems[-1].sum() + spikes[0].sum()).backward()
    lif = model.layers[0].neuron
    assert lif.tau.grad is not None and lif.threshold.grad is not None


def test_set_surrogate_reaches_every_lif():
    model = _model("conv")
    fn = get_surrogate("triangle", 0.5)
    set_surrogate(model, fn)
    assert all(m.spike_fn == fn for m in model.modules() if isinstance(m, LIF))


def test_conv_needs_images():
    cfg = apply(Config(), {"model.arch": "conv"})
    with pytest.raises(ConfigError, match="needs image inputs"):
        build_model(cfg, (40,), 10)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.arch", "transformer"),
        ("model.pool", "median"),
        ("model.readout", "softmax"),
        ("model.init", "orthogonal"),
        ("neuron.reset", "hard"),
    ],
)
def test_bad_choices_name_the_key(key, value):
    cfg = apply(Config(), {"model.arch": "conv", key: value})
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_model(cfg, (1, 8, 8), 3)


@pytest.mark.parametrize("arch", ["s5", "gru"])
def test_language_archs_refused_for_classification(arch):
    with pytest.raises(ConfigError, match="trainer.task=language"):
        _model("mlp", **{"model.arch": arch})
