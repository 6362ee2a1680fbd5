"""The gymnasium adapter steps real CartPole/Acrobot envs exactly as gymnasium does."""

import gymnasium
import numpy as np

from spikeopt.config import EnvConfig
from spikeopt.tasks.envs import GymBatch, baselines, make_env, random_actor, run_episodes


def test_a_batch_replays_single_gymnasium_episodes():
    batch = GymBatch("cartpole")
    ep = run_episodes(batch, random_actor(2, 0), [11, 12, 13])
    for i, seed in enumerate([11, 12, 13]):
        env = gymnasium.make("CartPole-v1")
        obs, _ = env.reset(seed=seed)
        obs_i, actions, rewards = ep.episode(i)
        for t, a in enumerate(actions):
            np.testing.assert_allclose(obs_i[t], obs, rtol=1e-6)
            obs, r, term, trunc, _ = env.step(int(a))
            assert r == rewards[t]
        assert term or trunc  # the batch ended the episode where gymnasium did


def test_greedy_heuristics_beat_random_and_success_follows_the_task():
    cart = make_env(EnvConfig(name="cartpole"))
    b = baselines(cart, 5, seed=0)
    assert b["greedy_return"] > 3 * b["random_return"]
    acro = make_env(EnvConfig(name="acrobot", max_steps=200))
    assert acro.max_steps == 200
    b = baselines(acro, 3, seed=0)
    assert b["greedy_success_rate"] > b["random_success_rate"]
