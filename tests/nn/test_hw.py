"""Hardware sign constraints: sign annealing, Dale's law, coherence, the weight terms."""

import math
import re

import pytest
import torch
from torch import nn
from torch.func import functional_call

from spikeopt import api
from spikeopt.config import Config, ConfigError, HWConfig, apply
from spikeopt.functional.loss import make_loss
from spikeopt.methods import METHODS
from spikeopt.nn import build_model
from spikeopt.nn.hw import (
    Dale,
    SignAnneal,
    coherence,
    constrain_model,
    incoherence,
    set_sign_alpha,
    sign_alpha_at,
    sign_topology,
    topology_loss,
    weight_layers,
    weight_magnitude_loss,
)
from spikeopt.nn.quant import quantize_model
from spikeopt.population import Perturbation, evaluate, materialize
from tests.helpers import cli


def test_sign_anneal_values_at_alpha_start_and_end():
    v = torch.tensor([[0.5, -0.2, 0.3, 0.1]])
    u = torch.tensor([[0.1, -0.1]])  # two row blocks of 2
    p = SignAnneal(block=2, alpha=1.0)
    t = math.tanh(0.1)
    torch.testing.assert_close(p(v, u), torch.tensor([[0.5 * t, 0.2 * t, -0.3 * t, -0.1 * t]]))
    p.alpha.fill_(50.0)  # the end: tanh(5) = 0.99991, a hard sign
    torch.testing.assert_close(p(v, u), torch.tensor([[0.5, 0.2, -0.3, -0.1]]), atol=1e-3, rtol=0)
    # registered: the initial weight keeps its magnitudes, each block its majority sign
    w = torch.tensor([[0.4, -0.1, -0.3, 0.2, 0.6]])
    v0, u0 = SignAnneal(block=2, alpha=2.0).right_inverse(w)
    torch.testing.assert_close(u0, torch.tensor([[1.0, -1.0, 1.0]]))
    back = SignAnneal(block=2, alpha=2.0)(v0, u0)
    torch.testing.assert_close(back, torch.tensor([[0.4, 0.1, -0.3, -0.2, 0.6]]))


def test_alpha_schedule_is_geometric_and_held_after_total_epochs():
    hw = HWConfig(sign_alpha_start=1.0, sign_alpha_end=100.0, sign_total_epochs=3)
    assert [sign_alpha_at(e, hw, 10) for e in (0, 1, 2, 7)] == pytest.approx([1, 10, 100, 100])
    assert sign_alpha_at(9, HWConfig(sign_alpha_end=50.0), 10) == pytest.approx(50.0)


def test_coherence_is_100_for_coherent_and_known_for_mixed():
    coherent = torch.tensor([[0.5, 0.2, -0.3, -0.1], [-1.0, -2.0, 3.0, 0.0]])
    assert float(coherence(coherent, 2)) == pytest.approx(100.0)
    mixed = torch.tensor([[0.3, -0.1, 0.2, -0.2]])  # blocks: max(0.3, 0.1), max(0.2, 0.2)
    assert float(coherence(mixed, 2)) == pytest.approx(100 * (0.3 + 0.2) / 0.8)
    assert float(coherence(mixed, 0)) == pytest.approx(100 * 0.5 / 0.8)  # the whole row
    assert float(coherence(torch.zeros(2, 3), 2)) == 100.0
    assert float(incoherence(mixed, 2)) == pytest.approx(1 - 0.5 / 0.8)


def test_losses_values_and_gradients_on_known_tensors():
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.5, -0.5], [0.2, -2.0]]))
    loss = weight_magnitude_loss(model, 1.0)  # (0.5^2 + 1^2) / 4
    assert float(loss.detach()) == pytest.approx(1.25 / 4)
    loss.backward()
    want = torch.tensor([[2 * 0.5, 0.0], [0.0, -2 * 1.0]]) / 4
    torch.testing.assert_close(model[0].weight.grad, want)
    model[0].weight.grad = None
    topo = topology_loss(model, 2.0)  # whole rows: minority 0.5 + 0.2 of total 4.2
    assert float(topo.detach()) == pytest.approx(2.0 * 0.7 / 4.2)
    topo.backward()
    w = model[0].weight.detach()
    # d/dw of 2 * sum_b min(P_b, N_b) / S: the minority's entries pull to zero, others shrink
    s, m = w.abs().sum(), 0.7
    minority = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    want = 2.0 * (minority * w.sign() / s - m * w.sign() / s**2)
    torch.testing.assert_close(model[0].weight.grad, want)


def _model(arch: str, hw: dict[str, object], terms=()) -> tuple[nn.Module, Config]:
    over = {"model.arch": arch, "model.readout": "li", "loss.name": "ce_mean", **hw}
    over["model.hidden"] = [24]
    if terms:
        over["loss.terms"] = list(terms)
    cfg = apply(Config(), over)
    torch.manual_seed(0)
    model = build_model(cfg, (64,), 10)
    constrain_model(model, cfg.hw)
    return quantize_model(model, cfg.hw), cfg


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand((12, 1, 64), generator=g) * 2
    return x.expand(12, 4, 64), torch.randint(0, 10, (12,), generator=g)


def test_dale_signs_are_kept_through_training_steps():
    model, cfg = _model("rsnn", {"hw.dale": True})
    signs = [m.parametrizations["weight"][0].sign.clone() for _, m in weight_layers(model)]
    loss = make_loss(cfg.loss, 1, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = _batch()
    for _ in range(5):
        opt.zero_grad()
        loss(*model(x), y)[0].backward()
        opt.step()
    for (_, m), d in zip(weight_layers(model), signs):
        w = m.weight.detach()
        assert isinstance(m.parametrizations["weight"][0], Dale)
        assert bool(((w * d.view(1, -1)) >= 0).all())  # every column on its own sign


@pytest.mark.parametrize(
    "hw",
    [
        {"hw.sign_anneal": True, "hw.sign_block": 8},
        {"hw.sign_anneal": True, "hw.sign_block": 8, "hw.weight_bits": 4},
        {"hw.dale": True},
        # unconstrained, weights above the limit: the terms differ member by member
        {"hw.magnitude_limit": 0.05, "loss.magnitude_weight": 100.0},
    ],
)
def test_batched_members_run_their_own_constrained_weights(hw):
    # the batched fitness equals each member's originals run through the parametrised model,
    # and the weight terms score each member's own weights (part of its fitness)
    model, cfg = _model("mlp", hw, terms=("ce", "magnitude", "topology"))
    set_sign_alpha(model, 3.0)
    loss = make_loss(cfg.loss, 1, model, cfg.hw)
    batch = _batch()
    pert = Perturbation(6, 0.1, 1, "lowrank", seed=5)
    fast = evaluate(model, pert, batch, loss, chunk=4)
    one, mixed = [], []
    for i in range(6):
        member = materialize(model, pert, i)
        with torch.no_grad():
            spikes, mems = functional_call(model, member, (batch[0],))
            mixed.append(-float(loss(spikes, mems, batch[1])[0]))  # the centre's weights
            saved = {n: p.detach().clone() for n, p in model.named_parameters()}
            model.load_state_dict({**model.state_dict(), **member})
            one.append(-float(loss(spikes, mems, batch[1])[0]))  # the terms read this member
            model.load_state_dict({**model.state_dict(), **saved})
    torch.testing.assert_close(fast, torch.tensor(one, dtype=torch.float64), atol=1e-5, rtol=0)
    if "hw.magnitude_limit" in hw:  # members' outputs scored with the centre's weight terms
        assert not torch.allclose(fast, torch.tensor(mixed, dtype=torch.float64), atol=1e-4)


def test_hw_keys_bind_in_a_tune_search_space():
    from spikeopt import tune
    from spikeopt.tune import space

    spec = {
        "hw.sign_alpha_end": {"loguniform": [10, 100]},
        "hw.sign_block": {"choice": [8, 16, 0]},
        "hw.dale": {"choice": [False]},
        "hw.magnitude_limit": {"uniform": [0.5, 2.0]},
        "loss.topology_weight": {"uniform": [0.0, 1.0]},
    }
    s = tune.Search("digits-sign").bind_all(space.parse(spec))
    assert sorted(s.space) == sorted(spec)
    with pytest.raises(ConfigError, match="did you mean hw.sign_block"):
        tune.Search("digits-sign").bind_all(space.parse({"hw.sign_blok": {"choice": [8]}}))


_SMALL = {
    "model.hidden": [32],
    "model.dropout": 0.0,
    "encoder.steps": 4,
    "trainer.device": "cpu",
    "trainer.seed": 0,
}


def test_bptt_with_sign_annealing_learns_digits_and_ends_coherent(tmp_path):
    over = {**_SMALL, "optim.lr": 0.01, "trainer.epochs": 5, "hw.sign_alpha_end": 20.0}
    out = api.run("digits-sign", over, out=tmp_path / "run", quiet=True)
    assert out["test_acc"] > 0.8  # chance: 0.1
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    head, last = rows[0].split(","), rows[-1].split(",")
    row = dict(zip(head, last))
    assert float(row["sign_alpha"]) == pytest.approx(20.0)
    keys = [k for k in head if k.startswith("sign_topology/")]
    assert keys == [f"sign_topology/layers.{i}.fc/weight_coherence_pct" for i in (0, 1)]
    assert all(float(row[k]) == pytest.approx(100.0) for k in keys)


def test_sign_topology_is_a_dict_per_weight():
    model, _ = _model("rsnn", {})
    got = sign_topology(model, 4)
    assert sorted(got) == sorted(
        f"sign_topology/{n}/weight_coherence_pct" for n, _ in weight_layers(model)
    )
    assert all(50.0 <= v <= 100.0 for v in got.values())


# one tiny step of every method with a sign constraint and the weight terms
_TINY = {
    **_SMALL,
    "model.hidden": [8],
    "encoder.steps": 2,
    "data.n_train": 64,
    "data.n_test": 32,
    "trainer.epochs": 1,
    "trainer.steps_per_epoch": 1,
    "es.population": 8,
    "loss.terms": ["ce", "magnitude", "topology"],
}


@pytest.mark.parametrize("method", sorted(m for m in METHODS if m != "reinforce"))
@pytest.mark.parametrize("hw", [{"hw.sign_anneal": False, "hw.dale": True}, {"hw.weight_bits": 4}])
def test_every_method_runs_a_step_with_the_constraints(method, hw):
    over = {**_TINY, **hw, "method.name": method}
    if method == "conversion":  # it rescales the trained weights: constraints refused
        with pytest.raises(ConfigError, match="conversion rescales every trained weight"):
            api.run("digits-conversion", {**over, "loss.terms": []}, quiet=True)
        return
    if method == "nodepert":  # members share the centre's weights: weight terms refused
        with pytest.raises(ConfigError, match="method.name=nodepert with loss.terms magnitude"):
            api.run("digits-sign", over, quiet=True)
        over["loss.terms"] = []
    out = api.run("digits-sign", over, quiet=True)
    assert math.isfinite(out["test_acc"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["hw.sign_block=-1"], "hw.sign_block=-1 is out of range: it must be >= 0"),
        (["hw.dale=true"], "hw.sign_anneal and hw.dale together"),
    ],
)
def test_bad_hw_keys_exit_2_and_write_nothing(override, message, tmp_path):
    out = tmp_path / "run"
    done = cli("run", "digits-sign", "trainer.epochs=1", *override, "--out", str(out), "--quiet")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"hw.sign_total_epochs": "x"}, "hw.sign_total_epochs: expected int"),
        ({"hw.sign_alpha_end": 0}, "hw.sign_alpha_end=0.0 is out of range"),
        ({"hw.sign_alpha_start": math.inf}, "hw.sign_alpha_start=inf is out of range"),
        ({"hw.magnitude_limit": -1}, "hw.magnitude_limit=-1.0 is out of range"),
        ({"hw.sign_anneel": True}, "unknown config key 'hw.sign_anneel'"),
        (
            {"es.workers": 2, "method.name": "es"},
            "hw.sign_anneal with es.workers=2: a parametrised model",
        ),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(override, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        api.run("digits-sign", {"trainer.epochs": 1, **override}, out=tmp_path / "r", quiet=True)
    assert not (tmp_path / "r").exists()
