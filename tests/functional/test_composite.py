"""Composite losses: declared arguments only, exact terms, population axes, config-driven runs."""

import dataclasses

import pytest
import torch

from spikeopt import api
from spikeopt.config import ConfigError, LossConfig
from spikeopt.functional.composite import (
    ARGS,
    Composite,
    Term,
    make_composite,
    population_mse,
    rate_target,
    weight_limit,
)
from spikeopt.functional.loss import Loss, make_loss
from spikeopt.train.loop import build, train


def _activity(lead=()):
    g = torch.Generator().manual_seed(0)
    hidden = (torch.rand(*lead, 4, 5, 6, generator=g) < 0.3).float()
    out = (torch.rand(*lead, 4, 5, 3, generator=g) < 0.5).float()
    mems = [torch.randn(*lead, 4, 5, 6, generator=g), torch.randn(*lead, 4, 5, 3, generator=g)]
    return [hidden, out], mems, torch.tensor([0, 1, 2, 1])


def test_each_term_gets_only_the_arguments_it_declares():
    seen = {}

    def spy(scores, y):
        seen["args"] = (scores.shape, y.shape)
        return scores.sum() * 0

    spikes, mems, y = _activity()
    loss = Composite("ce_count", terms=(Term("spy", spy),))
    total, scores = loss(spikes, mems, y)
    assert seen["args"] == ((4, 3), (4,)) and float(total) == 0.0
    torch.testing.assert_close(scores, spikes[-1].sum(-2))

    def bad(logits, y):
        return logits

    only = "declares logits; a term may take only " + ", ".join(ARGS)
    with pytest.raises(ConfigError, match=only):
        Composite("ce_count", terms=(Term("bad", bad),))
    with pytest.raises(ConfigError, match="at least one term"):
        Composite("ce_count")


def test_weighted_sum_of_exact_terms_keeps_population_axes():
    spikes, mems, y = _activity(lead=(7,))
    cfg = LossConfig(terms=["ce", "mse", "rate"], ce_weight=0.5, mse_weight=2.0, rate_weight=3.0,
                     rate_targets=[0.1], mse_on=0.8, mse_off=0.1)  # fmt: skip
    loss = make_loss(cfg)
    total, _ = loss(spikes, mems, y)
    parts, _ = loss.components(spikes, mems, y)
    assert total.shape == (7,) and all(v.shape == (7,) for v in parts.values())
    ce, _ = Loss("ce_count")(spikes, mems, y)
    torch.testing.assert_close(parts["ce"], ce)
    rates = spikes[-1].mean(-2)
    target = torch.full_like(rates, 0.1)
    target[..., torch.arange(4), y] = 0.8
    torch.testing.assert_close(parts["mse"], (rates - target).pow(2).mean((-2, -1)))
    torch.testing.assert_close(parts["rate"], (spikes[0].mean((-3, -2, -1)) - 0.1) ** 2)
    torch.testing.assert_close(total, 0.5 * ce + 2.0 * parts["mse"] + 3.0 * parts["rate"])


def test_population_mse_targets_every_neuron_of_the_correct_class():
    spikes = torch.zeros(1, 2, 4)  # 2 classes x 2 neurons, T = 2
    spikes[0, :, 0] = 1.0  # class 0's first neuron fires at both steps
    mse = population_mse(on=1.0, off=0.0)([spikes], torch.tensor([0]), 2)
    assert float(mse) == pytest.approx((0 + 1 + 0 + 0) / 4)  # its partner should fire too


def test_rate_target_per_layer_and_weight_limit():
    h1, h2, out = torch.full((2, 4, 3), 0.5), torch.full((2, 4, 5), 0.25), torch.zeros(2, 4, 2)
    assert float(rate_target([0.5, 0.0])([h1, h2, out])) == pytest.approx(0.0625)
    assert float(rate_target([0.25])([h1, h2, out])) == pytest.approx(0.0625)
    with pytest.raises(ConfigError, match="3 values for 2 hidden layers"):
        rate_target([0.1, 0.2, 0.3])([h1, h2, out])
    w = torch.tensor([[0.5, -2.0], [1.5, 0.0]])
    assert float(weight_limit(1.0)([w, torch.ones(3) * 9])) == pytest.approx((1 + 0.25) / 4)
    with pytest.raises(ConfigError, match="loss.wlimit must be > 0"):
        weight_limit(0.0)
    with pytest.raises(ConfigError, match="make_loss"):
        make_composite(LossConfig(terms=["wlimit"]))(*_activity())  # no model bound
    with pytest.raises(ConfigError, match="ce, mse, rate, wlimit"):
        make_composite(LossConfig(terms=["ce", "l2"]))


TINY = {"model.hidden": [64], "encoder.steps": 4, "trainer.epochs": 2, "trainer.progress": False,
        "data.n_test": 300}  # fmt: skip


def test_composite_from_config_trains_logs_components_and_the_chosen_recall(tmp_path):
    over = {**TINY, "loss.terms": ["ce", "rate", "wlimit"], "loss.rate_weight": 0.5,
            "loss.wlimit": 0.5, "metric.recall_class": 3}  # fmt: skip
    exp = build(api.resolve("digits-mlp-surrogate", over))
    assert isinstance(exp.loss, Composite) and len(exp.loss.params) > 0
    assert dataclasses.replace(exp.loss, neurons_per_class=1).terms == exp.loss.terms
    summary = train(api.resolve("digits-mlp-surrogate", over), tmp_path, quiet=True)
    assert summary["test_acc"] > 0.6  # learns (chance is 0.1)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for col in ("loss_ce", "loss_rate", "loss_wlimit", "recall_3"):
        assert col in header, col
    assert "recall_0" not in header  # only the chosen class
    last = dict(zip(header, rows[-1].split(",")))
    weighted = float(last["loss_ce"]) + 0.5 * float(last["loss_rate"]) + float(last["loss_wlimit"])
    assert float(last["test_loss"]) == pytest.approx(weighted, rel=1e-5)
    with pytest.raises(ConfigError, match="metric.recall_class=10"):
        train(api.resolve("digits-mlp-surrogate", {**TINY, "metric.recall_class": 10}), quiet=True)


def test_composite_scores_es_populations(tmp_path):
    over = {"es.population": 8, "model.hidden": [32], "encoder.steps": 4, "trainer.epochs": 1,
            "trainer.steps_per_epoch": 2, "trainer.progress": False, "data.n_test": 100,
            "loss.terms": ["ce", "rate"], "loss.rate_weight": 1.0}  # fmt: skip
    summary = train(api.resolve("digits-es", over), tmp_path, quiet=True)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert summary["iterations"] == 2 and "loss_rate" in header and "train_fit_mean" in header
