"""Every control recipe runs end to end on a tiny budget (driven by the registry)."""

import math

import pytest

from spikeopt import api
from spikeopt.recipes import list_recipes

CONTROL = [r.name for r in list_recipes() if r.config().trainer.task == "control"]
TINY_BUDGET = {
    "rl.episodes": 1,
    "rl.generations": 1,
    "rl.batch_episodes": 1,
    "es.population": 4,
    "rl.baseline_episodes": 2,
    "rl.eval_episodes": 1,
    "env.max_steps": 10,
    "encoder.steps": 2,
    "trainer.progress": False,
}


def test_the_issue_recipes_are_registered():
    for name in ("nav-reinforce", "nav-reinforce-hard", "nav-es", "nav-mlp-reinforce",
                 "foraging-reinforce", "cartpole-lif-es", "cartpole-reinforce",
                 "acrobot-lif-es", "nav-reinforce-legacy"):  # fmt: skip
        assert name in CONTROL


@pytest.mark.parametrize("name", CONTROL)
def test_control_recipe_smoke(name):
    s = api.run(name, TINY_BUDGET, quiet=True)  # outputs are checked in test_control.py
    assert math.isfinite(s["eval_return"]) and 0 <= s["success_rate"] <= 1
    assert s["recipe"] == name and s["iterations"] == 1
