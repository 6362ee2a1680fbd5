"""Quantisation-aware training: the quantiser, its STE, exact quantised members, a real run."""

import copy
import re

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from spikeopt import api
from spikeopt.config import Config, ConfigError, HWConfig, apply
from spikeopt.functional.loss import make_loss
from spikeopt.nn import build_model
from spikeopt.nn.quant import (
    Quantizer,
    levels,
    quantised,
    quantize,
    quantize_model,
    scale,
    weight_layers,
)
from spikeopt.population import (
    NodePerturbation,
    Perturbation,
    evaluate,
    materialize,
    members_of,
)
from spikeopt.population.quant import quantised_members
from tests.helpers import cli


def test_quantize_known_tensors_per_tensor_and_per_channel():
    w = torch.tensor([[0.7, -0.33, 0.12, 0.0], [0.06, -0.2, 0.26, -0.14]])
    # 4 bits: 7 levels a side, step 0.7 / 7 = 0.1 over the whole tensor
    expect = torch.tensor([[0.7, -0.3, 0.1, 0.0], [0.1, -0.2, 0.3, -0.1]])
    torch.testing.assert_close(quantize(w, 4), expect)
    # per channel: row 2 has its own step 0.26 / 7
    s = 0.26 / 7
    row = torch.tensor([2.0, -5.0, 7.0, -4.0]) * s
    torch.testing.assert_close(quantize(w, 4, per_channel=True)[1], row)
    torch.testing.assert_close(quantize(w, 4, per_channel=True)[0], expect[0])
    # 2 bits is ternary {-max, 0, max}
    t = torch.tensor([1.0, 0.4, -0.6, -1.0, 0.0])
    torch.testing.assert_close(quantize(t, 2), torch.tensor([1.0, 0.0, -1.0, -1.0, 0.0]))
    assert [levels(b) for b in (2, 4, 8)] == [1, 7, 127]
    assert torch.equal(quantize(torch.zeros(3, 2), 4), torch.zeros(3, 2))  # no 0/0


def test_members_are_quantised_each_on_their_own_grid():
    w = torch.stack([torch.tensor([0.7, 0.1]), torch.tensor([0.14, -0.07])])  # two members
    torch.testing.assert_close(quantize(w, 4, lead=1), torch.tensor([[0.7, 0.1], [0.14, -0.08]]))
    assert scale(w, 4, False, lead=1).shape == (2, 1)
    assert scale(torch.ones(3, 5, 2, 2), 4, True, lead=1).shape == (3, 5, 1, 1)


def test_straight_through_gradient_is_the_identity():
    w = torch.randn(5, 3, requires_grad=True)
    q = Quantizer(4, per_channel=True)(w)
    torch.testing.assert_close(q.detach(), quantize(w.detach(), 4, per_channel=True))
    g = torch.randn(5, 3)
    (q * g).sum().backward()
    assert w.grad is not None and torch.equal(w.grad, g)


def _model(arch: str, hw: dict[str, object]) -> tuple[nn.Module, Config]:
    over = {"model.arch": arch, "model.readout": "li", "loss.name": "ce_mean", **hw}
    if arch == "conv":
        over.update({"model.channels": [4], "model.hidden": [16]})
    else:
        over["model.hidden"] = [24]
    cfg = apply(Config(), over)
    torch.manual_seed(0)
    shape = (1, 8, 8) if arch == "conv" else (64,)
    model = build_model(cfg, shape, 10)
    return quantize_model(model, cfg.hw), cfg


def _batch(arch: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (12, 1, 1, 8, 8) if arch == "conv" else (12, 1, 64)
    x = torch.rand(shape, generator=g) * 2
    return x.expand(12, 4, *shape[2:]), torch.randint(0, 10, (12,), generator=g)


def _on_grid(w: torch.Tensor, bits: int, per_channel: bool) -> bool:
    """True when every entry of ``w`` is an integer level times the max-|w| step."""
    k = w / scale(w, bits, per_channel)
    return bool(torch.allclose(k, k.round(), atol=1e-4) and k.abs().max() <= levels(bits) + 1e-4)


@pytest.mark.parametrize("per_channel", [False, True])
def test_evaluated_members_weights_are_exactly_on_their_grid(per_channel):
    model, _ = _model("mlp", {"hw.weight_bits": 4, "hw.per_channel": per_channel})
    pert = Perturbation(6, 0.05, 1, "lowrank", seed=3)
    chunk = members_of(model, pert).members(0, 6)
    with torch.no_grad(), quantised_members(model) as exact:
        noise = exact(chunk)
        for j, layer in enumerate(model.layers):
            members = noise.weights(layer.fc.weight)  # what the batched layers read
            for i in range(6):
                assert _on_grid(members[i], 4, per_channel)
                float_member = materialize(model, pert, i)[
                    f"layers.{j}.fc.parametrizations.weight.original"
                ]
                want = quantize(float_member, 4, per_channel)  # q(theta + sigma eps_i)
                torch.testing.assert_close(members[i], want, rtol=0, atol=1e-6)


def _member_by_member(model, pert, batch, loss):
    """Every member's fitness, one at a time, from an unquantised copy of ``model`` that is
    handed ``q(theta + sigma eps_i)`` for each quantised weight (no parametrisation involved)."""
    plain = copy.deepcopy(model)
    grids = {}
    for name, module in weight_layers(plain):
        if parametrize.is_parametrized(module, "weight"):
            q = module.parametrizations["weight"][0]
            grids[name] = (q.bits, q.per_channel)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    out = []
    for i in range(pert.population):
        member = {}
        for key, value in materialize(model, pert, i).items():
            name, sep, _ = key.partition(".parametrizations.weight.original")
            member[f"{name}.weight" if sep else key] = (
                quantize(value, *grids[name]) if sep else value
            )
        with torch.no_grad():
            spikes, mems = functional_call(plain, member, (batch[0],))
        out.append(-float(loss(spikes, mems, batch[1])[0]))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(
    ("arch", "hw"),
    [
        ("mlp", {"hw.weight_bits": 4}),
        ("mlp", {"hw.weight_bits": 2, "hw.per_channel": True}),
        ("rsnn", {"hw.layer_bits": [4, 8, 0]}),
        ("conv", {"hw.weight_bits": 4, "hw.per_channel": True}),
    ],
)
def test_batched_population_equals_member_by_member_on_the_quantised_path(arch, hw):
    model, cfg = _model(arch, hw)
    loss = make_loss(cfg.loss, 1, model)
    batch = _batch(arch)
    pert = Perturbation(8, 0.1, 1, "lowrank", seed=5)
    fast = evaluate(model, pert, batch, loss, chunk=4)  # two chunks, batched layers
    torch.testing.assert_close(fast, _member_by_member(model, pert, batch, loss), atol=1e-5, rtol=0)
    # and not the float members: quantisation changed what ran
    float_model, _ = _model(arch, {})
    assert not torch.allclose(evaluate(float_model, pert, batch, loss), fast, atol=1e-4)


def test_a_quantised_user_model_runs_each_member_quantised_under_vmap():
    model, cfg = _model("cnn", {"hw.weight_bits": 3})
    loss = make_loss(cfg.loss, 1, model)
    batch = _batch("mlp")
    pert = Perturbation(4, 0.1, 1, "full", seed=2)
    fast = evaluate(model, pert, batch, loss)
    torch.testing.assert_close(fast, _member_by_member(model, pert, batch, loss), atol=1e-5, rtol=0)


def test_node_perturbation_members_share_the_quantised_centre():
    model, cfg = _model("mlp", {"hw.weight_bits": 4})
    loss = make_loss(cfg.loss, 1, model)
    x, y = _batch("mlp")
    spec = NodePerturbation(2, (0,), (1e-6,), ((12, 24),), seed=0, generation=0)
    with torch.no_grad():
        centre = -float(loss(*model(x), y)[0])  # the parametrised (quantised) forward
    fit = evaluate(model, spec, (x, y), loss)
    torch.testing.assert_close(
        fit, torch.tensor([centre, centre], dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_layer_bits_set_each_layer_and_zero_keeps_it_float():
    model, _ = _model("rsnn", {"hw.layer_bits": [4, 0, 8]})
    bits = [
        module.parametrizations["weight"][0].bits if parametrize.is_parametrized(module) else 0
        for _, module in weight_layers(model)
    ]
    assert bits == [4, 0, 8]
    assert quantised(model)
    with pytest.raises(ConfigError, match=r"hw.layer_bits has 2 entries but the model has 3"):
        quantize_model(_model("rsnn", {})[0], HWConfig(layer_bits=[4, 4]))
    assert not quantised(_model("mlp", {})[0])


# 64-32-10 at T = 4: seconds on one core (no outputs written)
_SMALL = {
    "hw.weight_bits": 4,
    "model.hidden": [32],
    "model.dropout": 0.0,
    "encoder.steps": 4,
    "trainer.device": "cpu",
    "trainer.seed": 0,
}


def test_bptt_at_4_bits_learns_digits_well_above_chance():
    over = {**_SMALL, "method.name": "surrogate", "optim.lr": 5e-3, "trainer.epochs": 3}
    assert api.run("digits-qat", over, quiet=True)["test_acc"] > 0.8  # chance: 0.1


def test_es_at_4_bits_learns_digits_well_above_chance():
    over = {**_SMALL, "es.population": 64, "optim.lr": 0.03, "trainer.epochs": 4}
    assert api.run("digits-qat", over, quiet=True)["test_acc"] > 0.6  # chance: 0.1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"hw.weight_bits": 1}, "hw.weight_bits=1 is out of range: it must be an integer in 2..8"),
        ({"hw.layer_bits": [4, 1]}, "hw.layer_bits=[4, 1] is out of range: it must be bits in 2"),
        ({"hw.weight_bits": "four"}, "hw.weight_bits: expected int or null"),
        ({"hw.bits": 4}, "unknown config key 'hw.bits'"),
        ({"hw.layer_bits": [4]}, "hw.layer_bits has 1 entries but the model has 2 weight layers"),
        ({"es.workers": 2}, "hw.weight_bits with es.workers=2"),
    ],
)
def test_bad_hw_values_are_refused_before_anything_is_written(override, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        api.run("digits-qat", {"trainer.epochs": 1, **override}, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["hw.weight_bits=9"], "hw.weight_bits=9 is out of range: it must be an integer in 2..8"),
    ],  # the other refusals go through the same error path, in-process above
)
def test_bad_hw_keys_exit_2_through_the_cli_and_write_nothing(override, message, tmp_path):
    out = tmp_path / "run"
    done = cli("run", "digits-qat", "trainer.epochs=1", *override, "--out", str(out), "--quiet")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not out.exists()
