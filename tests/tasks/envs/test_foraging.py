"""Foraging rules: eating, respawning, no terminal state, success by target."""

import numpy as np
import pytest

from spikeopt.tasks.envs import FORAGING_PRESETS, Foraging, GridEnv, baselines
from spikeopt.tasks.envs.foraging import ForagingPreset
from spikeopt.tasks.envs.grid import FORWARD, manhattan


def test_items_start_on_distinct_free_cells():
    env = Foraging(FORAGING_PRESETS["medium"])
    env.reset(list(range(20)))
    for pos, food in zip(env.agents.pos, env.food):
        cells = {tuple(pos), *map(tuple, food)}
        assert len(cells) == 1 + len(food)


def test_eating_pays_the_goal_reward_and_the_item_respawns_elsewhere():
    env = Foraging(ForagingPreset(size=6, n_food=2, max_steps=50, target=1))
    env.reset([0])
    env.agents.pos[0], env.agents.heading[0] = (3, 3), 0  # centre, facing up
    env.food[0] = [(3, 4), (0, 0)]  # one item straight ahead
    env.dist = manhattan(env.agents.pos, env.food[:, 0])
    res = env.step(np.array([FORWARD]))
    assert env.eaten[0] == 1 and env.success()[0]
    assert res.reward[0] == pytest.approx(0.5 - 0.005 + 1.0)
    assert not res.terminated[0]  # dynamic goals: the episode goes on
    assert tuple(env.food[0, 0]) not in {(3, 4), (0, 0)}  # respawned on a free cell
    assert tuple(env.food[0, 1]) == (0, 0)
    # the next observation points at the nearest remaining item
    assert res.obs[0, 0] > 0


def test_episodes_run_the_whole_budget_and_greedy_beats_random():
    env = Foraging(FORAGING_PRESETS["small"])
    b = baselines(env, 40, seed=0)
    assert b["random_steps"] == b["greedy_steps"] == 100
    assert b["greedy_success_rate"] > b["random_success_rate"] + 0.5
    assert np.isnan(b["greedy_steps_ratio"])  # no single optimal path


def test_gymnasium_view_reports_success():
    env = GridEnv(Foraging(FORAGING_PRESETS["small"]))
    env.reset(seed=0)
    for _ in range(100):
        _, _, term, trunc, info = env.step(int(env.action_space.sample()))
    assert trunc and not term and "success" in info
