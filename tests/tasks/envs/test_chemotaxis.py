"""Chemotaxis rules checked step by step against the issue's specification."""

import math

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from spikeopt.config import ConfigError, EnvConfig
from spikeopt.tasks.envs import (
    CHEMOTAXIS_PRESETS,
    Chemotaxis,
    GridEnv,
    baselines,
    make_env,
    random_actor,
    run_episodes,
)
from spikeopt.tasks.envs.grid import FORWARD, LEFT, RIGHT, STAY, shortest_path

LEGACY = CHEMOTAXIS_PRESETS["legacy-static-medium"]


def start_at(corner: tuple[int, int]) -> tuple[Chemotaxis, int]:
    """A legacy env reset to the seed whose start is ``corner``."""
    env = Chemotaxis(LEGACY)
    for seed in range(100):
        env.reset([seed])
        if tuple(env.agents.pos[0]) == corner:
            return env, seed
    raise AssertionError("no seed starts there")


def step(env: Chemotaxis, action: int) -> tuple[np.ndarray, float, bool, bool]:
    res = env.step(np.array([action]))
    return res.obs[0], float(res.reward[0]), bool(res.terminated[0]), bool(res.truncated[0])


def test_legacy_starts_in_an_inset_corner_facing_up_with_food_opposite():
    env = Chemotaxis(LEGACY)
    seen = set()
    env.reset(list(range(40)))
    for pos, food, h in zip(env.agents.pos, env.food, env.agents.heading):
        assert tuple(pos) in {(1, 1), (1, 8), (8, 1), (8, 8)}
        assert tuple(food) == (9 - pos[0], 9 - pos[1])
        assert h == 0
        seen.add(tuple(pos))
    assert len(seen) == 4  # the corner is drawn from the seed
    np.testing.assert_array_equal(env.optimal_steps(), 14)


def test_observation_is_strength_and_relative_direction():
    env, _ = start_at((1, 1))  # food at (8, 8): d = 14, bearing 45 deg, heading 90 deg
    obs = env.obs()[0]
    assert obs[0] == pytest.approx(math.tanh(1 - 14 / 20), abs=1e-6)
    assert obs[1] == pytest.approx(-0.25, abs=1e-6)  # food 45 deg to the right


def test_moves_turns_walls_and_rewards_step_by_step():
    env, _ = start_at((1, 1))
    _, r, term, trunc = step(env, FORWARD)  # up to (1, 2): distance 14 -> 13
    assert tuple(env.agents.pos[0]) == (1, 2) and env.agents.heading[0] == 0
    assert r == pytest.approx(0.5 - 0.005) and not term and not trunc
    _, r, *_ = step(env, RIGHT)  # turn to face right (+x) and move to (2, 2)
    assert tuple(env.agents.pos[0]) == (2, 2) and env.agents.heading[0] == 3
    assert r == pytest.approx(0.5 - 0.005)
    _, r, *_ = step(env, LEFT)  # face up again and move to (2, 3)
    assert tuple(env.agents.pos[0]) == (2, 3) and env.agents.heading[0] == 0
    _, r, *_ = step(env, LEFT)  # face left (-x), move to (1, 3): distance 12 -> 13
    assert tuple(env.agents.pos[0]) == (1, 3) and env.agents.heading[0] == 1
    assert r == pytest.approx(-0.5 - 0.005)
    _, r, *_ = step(env, FORWARD)  # (0, 3)
    _, r, *_ = step(env, FORWARD)  # into the wall: cancelled, the step still counts
    assert tuple(env.agents.pos[0]) == (0, 3) and env.agents.steps[0] == 6
    assert r == pytest.approx(-0.005)
    _, r, *_ = step(env, RIGHT)  # the turn to face up happens, then the move to (0, 4)
    assert tuple(env.agents.pos[0]) == (0, 4) and env.agents.heading[0] == 0


def test_the_body_blocks_the_last_two_cells_left_behind():
    env, _ = start_at((1, 1))
    step(env, FORWARD)  # (1, 2), body [(1, 1)]
    step(env, FORWARD)  # (1, 3), body [(1, 2), (1, 1)]
    step(env, RIGHT)  # facing right, (2, 3), body [(1, 3), (1, 2)]
    np.testing.assert_array_equal(env.agents.body[0], [[1, 3], [1, 2]])
    env.agents.heading[0] = 1  # face left (a U-turn cannot be made in one step; set it)
    _, r, *_ = step(env, FORWARD)  # into (1, 3), the cell just left: cancelled
    assert tuple(env.agents.pos[0]) == (2, 3) and env.agents.steps[0] == 4
    assert r == pytest.approx(-0.005)
    np.testing.assert_array_equal(env.agents.body[0], [[1, 3], [1, 2]])  # unchanged
    step(env, RIGHT)  # facing up, (2, 4), body [(2, 3), (1, 3)]
    step(env, LEFT)  # facing left, (1, 4), body [(2, 4), (2, 3)]
    _, r, *_ = step(env, LEFT)  # facing down into (1, 3): three cells back, free again
    assert tuple(env.agents.pos[0]) == (1, 3)


def test_revisit_and_stuck_penalties():
    env, _ = start_at((1, 1))
    _, r, *_ = step(env, STAY)
    assert r == pytest.approx(-0.005)  # no cell two steps back yet
    rewards = [step(env, STAY)[1] for _ in range(8)]  # steps 2..9, all in place
    # on the cell of two steps ago from step 2 on; in place k = 2..9, penalised once k > 5
    expected = [-0.005 - 0.02 - (0.1 * min(k - 5, 10) if k > 5 else 0) for k in range(2, 10)]
    np.testing.assert_allclose(rewards, expected)


def test_reaching_the_food_pays_the_goal_reward_and_terminates():
    env, _ = start_at((1, 1))
    total, steps = 0.0, 0
    for action in [FORWARD] * 7 + [RIGHT] + [FORWARD] * 6:  # up to (1, 8), right to (8, 8)
        _, r, term, _ = step(env, action)
        total += r
        steps += 1
    assert term and env.success()[0] and steps == 14
    assert r == pytest.approx(0.5 - 0.005 + 2.0 * (1 - 14 / 300))
    assert total == pytest.approx(14 * 0.495 + 2.0 * (1 - 14 / 300))
    _, r, term, trunc = step(env, FORWARD)  # a finished episode is frozen
    assert r == 0 and not term and not trunc


def test_the_step_budget_truncates():
    env = Chemotaxis(LEGACY, max_steps=3)
    env.reset([0])
    results = [step(env, STAY) for _ in range(3)]
    assert [t for *_, t in results] == [False, False, True]
    assert not env.success()[0]


def test_random_and_greedy_baselines_match_the_issue():
    env = Chemotaxis(LEGACY)
    b = baselines(env, 400, seed=0)
    assert 0.57 <= b["random_success_rate"] <= 0.71  # "~64 %"
    assert b["greedy_success_rate"] == 1.0 and b["greedy_steps"] == 14.0
    assert b["greedy_steps_ratio"] == 1.0


def test_hard_preset_defeats_random_walks_but_not_the_gradient():
    env = make_env(EnvConfig(name="chemotaxis", preset="hard"))
    b = baselines(env, 100, seed=1)
    assert b["random_success_rate"] <= 0.2
    assert b["greedy_success_rate"] >= 0.95


def test_episodes_are_reproducible_from_their_seeds():
    env = Chemotaxis(CHEMOTAXIS_PRESETS["hard"])
    a = run_episodes(env, random_actor(4, 3), [5, 6, 7])
    b = run_episodes(env, random_actor(4, 3), [5, 6, 7])
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.lengths, b.lengths)


def test_shortest_path_counts_turns_that_move():
    assert shortest_path((1, 1), 0, (8, 8), 10) == 14
    assert shortest_path((5, 5), 0, (5, 2), 10) == 5  # straight behind: two extra steps


def test_gymnasium_view_passes_the_env_checker():
    env = GridEnv(Chemotaxis(LEGACY))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert isinstance(env.action_space, gymnasium.spaces.Discrete)


def test_bad_names_are_config_errors():
    with pytest.raises(ConfigError, match="env.preset"):
        make_env(EnvConfig(name="chemotaxis", preset="nope"))
    with pytest.raises(ConfigError, match="env.name"):
        make_env(EnvConfig(name="maze"))
    with pytest.raises(ConfigError, match="env.max_steps"):
        make_env(EnvConfig(max_steps=-1))
