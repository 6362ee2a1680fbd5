"""SNES: per-parameter widths adapt, the mean converges on a known optimum, digits learn."""

import math

import pytest
import torch

from spikeopt import api
from spikeopt.config import Config, ConfigError, apply
from spikeopt.methods.snes import SNES, default_sigma_lr
from tests.helpers import Point, Quadratic


def _snes(**over):
    cfg = apply(Config(), {"method.name": "snes", "es.population": 32, "es.sigma": 0.5,
                           "es.sigma_floor": 1e-6, "optim.name": "sgd", "optim.momentum": 0.0,
                           "optim.lr": 1.0, **over})  # fmt: skip
    return cfg


def test_snes_converges_and_narrows_the_widths_it_no_longer_needs():
    torch.manual_seed(0)
    target = torch.linspace(-1, 1, 10)
    obj = Quadratic(target, torch.ones(10))
    cfg = _snes()
    method = SNES(cfg, None, obj)  # type: ignore[arg-type]
    state = method.init(Point(torch.zeros(10)), cfg)
    start = float(obj.value(state.model.theta.detach()))
    for _ in range(150):
        state, metrics = method.step(state, None)
    end = float(obj.value(state.model.theta.detach()))
    assert -end < 1e-3 * -start  # the distance to the optimum shrank by more than 30x
    assert metrics["sigma"] < 0.1 * cfg.es.sigma  # widths contract around the optimum
    assert math.isfinite(metrics["fit_mean"]) and metrics["nonfinite"] == 0


def test_widths_grow_along_directions_where_big_steps_pay():
    # the optimum is far along coordinate 0 only: its width grows, the others' shrink
    target = torch.tensor([20.0, 0.0, 0.0, 0.0])
    cfg = _snes(**{"es.sigma": 0.1, "optim.lr": 0.5})
    method = SNES(cfg, None, Quadratic(target, torch.ones(4)))  # type: ignore[arg-type]
    state = method.init(Point(torch.zeros(4)), cfg)
    for _ in range(20):
        state, _ = method.step(state, None)
    sig = state.sigmas[0]
    assert sig[0] > 2 * 0.1 and sig[0] > 2 * sig[1:].max()


def test_default_sigma_lr_and_bad_settings():
    assert default_sigma_lr(100) == pytest.approx((3 + math.log(100)) / 50)
    with pytest.raises(ConfigError, match="es.sigma_lr"):
        SNES(_snes(**{"es.sigma_lr": -1.0}), None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="es.sigma_floor"):
        SNES(_snes(**{"es.sigma_floor": 1.0}), None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="es.population"):
        SNES(_snes(**{"es.population": 1}), None)  # type: ignore[arg-type]


def test_snes_learns_digits_well_above_chance():
    over = {"method.name": "snes", "model.hidden": [32], "trainer.epochs": 2,
            "trainer.steps_per_epoch": 20, "es.population": 64, "model.dropout": 0.0,
            "optim.lr": 0.01, "trainer.progress": False}  # fmt: skip
    summary = api.run("digits-es", over, quiet=True)
    assert summary["test_acc"] > 0.5  # chance is 0.10; seed 0 reaches ~0.74
