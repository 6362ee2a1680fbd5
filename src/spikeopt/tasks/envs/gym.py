"""gymnasium tasks (CartPole-v1, Acrobot-v1) behind the :class:`BatchEnv` protocol.

A batch is a list of real ``gymnasium.make`` environments stepped one after another (they
are cheap; the policy's forward pass is what is batched). Rewards, termination and the
500-step time limits are gymnasium's own. Success: CartPole -- the pole stayed up for the
whole time limit; Acrobot -- the tip reached the line (terminated before the limit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spikeopt.tasks.envs.base import StepResult

GYM_IDS: dict[str, str] = {"cartpole": "CartPole-v1", "acrobot": "Acrobot-v1"}


class GymBatch:
    """``n`` copies of one gymnasium environment stepped together."""

    def __init__(self, name: str, max_steps: int = 0) -> None:
        import gymnasium

        self.name, self.env_id = name, GYM_IDS[name]
        limit = max_steps or None  # None: gymnasium's own time limit
        self._make = lambda: gymnasium.make(self.env_id, max_episode_steps=limit)
        probe = self._make()
        self.obs_dim = int(probe.observation_space.shape[0])  # type: ignore[index]
        self.n_actions = int(probe.action_space.n)  # type: ignore[attr-defined]
        self.max_steps = int(probe.spec.max_episode_steps or 0)  # type: ignore[union-attr]
        self.envs = [probe]
        self.n = 0

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Reset ``len(seeds)`` envs with their seeds; obs (n, D)."""
        while len(self.envs) < len(seeds):
            self.envs.append(self._make())
        self.n = len(seeds)
        self.last = np.stack([e.reset(seed=int(s))[0] for e, s in zip(self.envs, seeds)]).astype(
            np.float32
        )
        self.done = np.zeros(self.n, dtype=bool)
        self.terminated = np.zeros(self.n, dtype=bool)
        self.steps = np.zeros(self.n, dtype=np.int64)
        return self.last.copy()

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every running env; finished ones stay frozen."""
        reward = np.zeros(self.n)
        term = np.zeros(self.n, dtype=bool)
        trunc = np.zeros(self.n, dtype=bool)
        for i in np.flatnonzero(~self.done):
            obs, r, te, tr, _ = self.envs[i].step(int(actions[i]))
            self.last[i], reward[i], term[i], trunc[i] = obs, r, te, tr
        self.steps += ~self.done
        self.terminated |= term
        self.done |= term | trunc
        return StepResult(self.last.copy(), reward, term, trunc)

    def success(self) -> np.ndarray:
        """CartPole: survived the time limit; Acrobot: reached the goal."""
        if self.name == "cartpole":
            return ~self.terminated
        return self.terminated.copy()

    def optimal_steps(self) -> np.ndarray:
        """Not defined for these tasks: NaN."""
        return np.full(self.n, np.nan)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Hand-written heuristics: CartPole pushes toward the side the pole falls to
        (angle + 0.5 angular velocity); Acrobot torques the actuated joint along its own
        velocity, pumping energy into the swing."""
        if self.name == "cartpole":
            return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
        return np.where(obs[:, 5] > 0, 2, 0).astype(np.int64)
