"""Foraging: several food items on a grid; each one eaten respawns elsewhere (dynamic goals).

The grid rules of :mod:`spikeopt.tasks.envs.grid` apply. On top:

* ``n_food`` items sit on distinct cells other than the agent's; stepping onto one eats it
  (``+goal_reward``) and it reappears on a uniformly random free cell, drawn from the
  episode's own seeded generator;
* observation (2,): the chemotaxis features of the *nearest* item (Manhattan, lowest index
  on ties): ``tanh(max(0, 1 - d / scale))`` and its direction minus the heading over pi;
* reward per step: ``approach * (d_prev - d)`` with both distances to the nearest item
  *before* any respawn (so eating is never penalised by the jump to the next item), plus the
  grid penalties, plus ``goal_reward`` per item eaten;
* no terminal state: every episode runs ``max_steps`` steps; it is a success when at least
  ``target`` items were eaten. There is no single optimal path, so ``steps / optimal`` is
  undefined (NaN); the number eaten is in the episode's return and in ``eaten``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spikeopt.config import ConfigError
from spikeopt.tasks.envs.base import StepResult
from spikeopt.tasks.envs.grid import N_ACTIONS, Agents, greedy_actions, manhattan, observe


@dataclass(frozen=True)
class ForagingPreset:
    """The numbers that define one foraging task."""

    size: int = 10
    n_food: int = 3
    max_steps: int = 100
    target: int = 5
    scale: float = 20.0
    body: int = 2
    goal_reward: float = 1.0
    approach: float = 0.5
    step_cost: float = 0.005
    revisit: float = 0.02


PRESETS: dict[str, ForagingPreset] = {
    "small": ForagingPreset(size=10, n_food=3, max_steps=100, target=10, scale=20.0),
    "medium": ForagingPreset(size=15, n_food=4, max_steps=200, target=20, scale=30.0),
    "large": ForagingPreset(size=25, n_food=6, max_steps=300, target=25, scale=50.0),
}


class Foraging:
    """``n`` foraging episodes stepped together (the :class:`BatchEnv` protocol)."""

    obs_dim = 2
    n_actions = N_ACTIONS

    def __init__(self, preset: ForagingPreset, max_steps: int = 0) -> None:
        if preset.size < 4 or not 1 <= preset.n_food < preset.size**2 - 1:
            raise ConfigError(f"foraging preset needs size >= 4 and 1 <= n_food < cells: {preset}")
        self.p = preset
        self.max_steps = max_steps or preset.max_steps
        self.n = 0

    def _free_cell(self, i: int, taken: list[tuple[int, int]]) -> tuple[int, int]:
        """A uniformly random cell of episode ``i`` not in ``taken`` (rejection sampling)."""
        while True:
            c = tuple(int(v) for v in self.rngs[i].integers(0, self.p.size, 2))
            if c not in taken:
                return c  # type: ignore[return-value]

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Random start cell and heading, ``n_food`` items on free cells; obs (n, 2)."""
        self.n = len(seeds)
        self.rngs = [np.random.default_rng(s) for s in seeds]
        pos, heading, food = [], [], []
        for i, rng in enumerate(self.rngs):
            start = (int(rng.integers(self.p.size)), int(rng.integers(self.p.size)))
            heading.append(int(rng.integers(4)))
            items: list[tuple[int, int]] = []
            for _ in range(self.p.n_food):
                items.append(self._free_cell(i, [start, *items]))
            pos.append(start)
            food.append(items)
        self.agents = Agents(np.array(pos), np.array(heading), self.p.size, self.p.body)
        self.food = np.array(food, dtype=np.int64)  # (n, K, 2)
        self.eaten = np.zeros(self.n, dtype=np.int64)
        self.done = np.zeros(self.n, dtype=bool)
        self.dist = self._nearest()[1]
        return self.obs()

    def _nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """(index (n,), distance (n,)) of each agent's nearest item."""
        d = manhattan(self.agents.pos[:, None, :], self.food)
        k = d.argmin(1)
        return k, d[np.arange(self.n), k]

    def obs(self) -> np.ndarray:
        """Current observations (n, 2): features of the nearest item."""
        k, _ = self._nearest()
        return observe(self.agents.pos, self.agents.heading, self.food[np.arange(self.n), k],
                       self.p.scale)  # fmt: skip

    def step(self, actions: np.ndarray) -> StepResult:
        """One step of every running episode; eaten items respawn."""
        live = ~self.done
        ag = self.agents
        ag.move(actions, live)
        k, d = self._nearest()
        reward = np.where(live, self.p.approach * (self.dist - d), 0.0)
        reward = reward + ag.penalties(live, self.p.step_cost, self.p.revisit)
        ate = live & (d == 0)
        reward = reward + np.where(ate, self.p.goal_reward, 0.0)
        for i in np.flatnonzero(ate):
            taken = [(int(x), int(y)) for x, y in [ag.pos[i], *self.food[i]]]
            self.food[i, k[i]] = self._free_cell(int(i), taken)
        self.eaten += ate
        truncated = live & (ag.steps >= self.max_steps)
        self.done |= truncated
        self.dist = self._nearest()[1]
        return StepResult(self.obs(), reward, np.zeros(self.n, dtype=bool), truncated)

    def success(self) -> np.ndarray:
        """(n,) bool: at least ``target`` items eaten."""
        return self.eaten >= self.p.target

    def optimal_steps(self) -> np.ndarray:
        """Undefined for moving goals: NaN."""
        return np.full(self.n, np.nan)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Turn toward the nearest item's gradient."""
        return greedy_actions(obs)
