"""The grid worlds as ordinary single-episode gymnasium environments (reset/step, spaces)."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from spikeopt.tasks.envs.chemotaxis import Chemotaxis
from spikeopt.tasks.envs.foraging import Foraging


class GridEnv(gymnasium.Env[np.ndarray, int]):
    """One episode of a batched grid world; ``reset(seed=...)`` seeds start, food and respawns.

    >>> env = GridEnv(Chemotaxis(CHEMOTAXIS_PRESETS["legacy-static-medium"]))
    """

    def __init__(self, batch: Chemotaxis | Foraging) -> None:
        self.batch = batch
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (batch.obs_dim,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(batch.n_actions)  # type: ignore[assignment]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; without a seed one is drawn from the env's own generator."""
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**63 - 1))
        return self.batch.reset([episode_seed])[0], {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One step; ``info['success']`` tells whether the goal/target was reached."""
        res = self.batch.step(np.array([action]))
        info = {"success": bool(self.batch.success()[0])}
        return (
            res.obs[0],
            float(res.reward[0]),
            bool(res.terminated[0]),
            bool(res.truncated[0]),
            info,
        )
