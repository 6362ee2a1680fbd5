"""CMA-ES through pycma: converges on a known optimum, isolated RNG, exact replayed resume."""

import numpy as np
import pytest
import torch

from spikeopt import api
from spikeopt.config import Config, ConfigError, apply
from spikeopt.methods.cma_es import CMAES
from tests.helpers import Point, Quadratic


def _method(**over):
    cfg = apply(Config(), {"method.name": "cma", "es.population": 12, "es.sigma": 0.5, **over})
    target = torch.linspace(-1, 1, 6)
    scale = torch.logspace(0, 3, 6)  # ill-conditioned: covariance adaptation matters
    obj = Quadratic(target, scale)
    method = CMAES(cfg, None, obj)  # type: ignore[arg-type]
    return method, method.init(Point(torch.zeros(6)), cfg), obj


def test_cma_converges_on_an_ill_conditioned_quadratic():
    method, state, obj = _method()
    start = float(obj.value(state.model.theta.detach()))
    for _ in range(120):
        state, metrics = method.step(state, None)
    assert float(obj.value(state.model.theta.detach())) > 1e-6 * start
    assert metrics["sigma"] < 0.5 and state.step == 120


def test_other_users_of_numpys_global_rng_do_not_change_the_search():
    runs = []
    for disturb in (False, True):
        method, state, _ = _method()
        for _ in range(5):
            if disturb:
                np.random.rand(3)  # someone else draws between generations
            state, _ = method.step(state, None)
        runs.append(state.model.theta.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_resume_replays_to_the_same_state():
    method, state, _ = _method()
    for _ in range(4):
        state, _ = method.step(state, None)
    saved = method.state_dict(state)
    for _ in range(3):
        state, _ = method.step(state, None)
    again, fresh, _ = _method()
    fresh = again.load_state_dict(fresh, saved)
    for _ in range(3):
        fresh, _ = again.step(fresh, None)
    assert torch.equal(fresh.model.theta, state.model.theta) and fresh.step == 7


def test_bad_settings():
    with pytest.raises(ConfigError, match="es.cma_diagonal"):
        _method(**{"es.cma_diagonal": "yes"})
    with pytest.raises(ConfigError, match="es.sigma"):
        _method(**{"es.sigma": 0.0})


def test_cma_learns_digits_well_above_chance():
    over = {"method.name": "cma", "model.hidden": [32], "trainer.epochs": 2,
            "trainer.steps_per_epoch": 20, "es.population": 64, "model.dropout": 0.0,
            "trainer.progress": False}  # fmt: skip
    summary = api.run("digits-es", over, quiet=True)
    assert summary["test_acc"] > 0.5  # chance is 0.10; seed 0 reaches ~0.78
