"""Chemotaxis: a worm on a grid follows a chemical gradient to one food source.

Every rule of :mod:`spikeopt.tasks.envs.grid` applies (egocentric moves, hard walls, a body
of the last cells left behind, shaping penalties). On top:

* observation (2,): ``tanh(max(0, 1 - d / scale))`` and the direction to the food minus the
  heading over pi, with ``d`` the Manhattan distance (``scale`` = 20 in the legacy preset);
* reward per step: ``0.5 * (d_prev - d)`` plus the grid penalties, plus on reaching the food
  ``goal_reward * max(0.1, 1 - steps / max_steps)``; reaching the food ends the episode
  (terminated), the step budget truncates it;
* starts: ``corners`` -- one of the 4 inset corners (1, 1), (1, s-2), (s-2, 1), (s-2, s-2)
  facing up, the food in the diagonally opposite inset corner (the predecessor's "static
  medium"; here the corner is drawn from the episode's seed); ``random`` -- start cell,
  heading and food cell uniform over the grid (food != start, at least ``min_distance``
  apart).

Presets are listed in :data:`PRESETS` and docs/control.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spikeopt.config import ConfigError
from spikeopt.tasks.envs.base import StepResult
from spikeopt.tasks.envs.grid import (
    N_ACTIONS,
    Agents,
    greedy_actions,
    manhattan,
    observe,
    shortest_path,
)


@dataclass(frozen=True)
class ChemotaxisPreset:
    """The numbers that define one chemotaxis task."""

    size: int = 10
    start: str = "corners"  # corners | random
    max_steps: int = 300
    scale: float = 20.0  # distance at which the gradient strength reaches 0
    body: int = 2
    goal_reward: float = 2.0
    approach: float = 0.5  # reward per cell of distance gained
    step_cost: float = 0.005
    revisit: float = 0.02
    min_distance: int = 1


PRESETS: dict[str, ChemotaxisPreset] = {
    # The predecessor's static medium, rule for rule: random walks succeed ~64 % of the time.
    "legacy-static-medium": ChemotaxisPreset(),
    # A smaller instance for fast tests and smoke runs.
    "tiny": ChemotaxisPreset(size=6, max_steps=60, scale=10.0),
    # Random start, heading and food on a 20 x 20 grid with a 60-step budget: random walks
    # rarely find the food, following the gradient always does.
    "hard": ChemotaxisPreset(size=20, start="random", max_steps=60, scale=40.0, min_distance=8),
}


class Chemotaxis:
    """``n`` chemotaxis episodes stepped together (the :class:`BatchEnv` protocol)."""

    obs_dim = 2
    n_actions = N_ACTIONS

    def __init__(self, preset: ChemotaxisPreset, max_steps: int = 0) -> None:
        if preset.size < 4 or preset.start not in ("corners", "random"):
            raise ConfigError(
                f"chemotaxis preset needs size >= 4 and start corners|random: {preset}"
            )
        self.p = preset
        self.max_steps = max_steps or preset.max_steps
        self.n = 0

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Place agent and food for each seed; returns observations (n, 2)."""
        self.n = len(seeds)
        s = self.p.size
        pos, heading, food = [], [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            if self.p.start == "corners":
                corners = [(1, 1), (1, s - 2), (s - 2, 1), (s - 2, s - 2)]
                c = corners[int(rng.integers(4))]
                pos.append(c)
                food.append((s - 1 - c[0], s - 1 - c[1]))
                heading.append(0)
            else:
                while True:
                    a, b = rng.integers(0, s, 2), rng.integers(0, s, 2)
                    if manhattan(a, b) >= max(1, self.p.min_distance):
                        break
                pos.append(tuple(a))
                food.append(tuple(b))
                heading.append(int(rng.integers(4)))
        self.agents = Agents(np.array(pos), np.array(heading), s, self.p.body)
        self.start = (np.array(pos), np.array(heading))
        self.food = np.array(food, dtype=np.int64)
        self.dist = manhattan(self.agents.pos, self.food)
        self.reached = np.zeros(self.n, dtype=bool)
        self.done = np.zeros(self.n, dtype=bool)
        return self.obs()

    def obs(self) -> np.ndarray:
        """Current observations (n, 2)."""
        return observe(self.agents.pos, self.agents.heading, self.food, self.p.scale)

    def step(self, actions: np.ndarray) -> StepResult:
        """One step of every running episode."""
        live = ~self.done
        ag = self.agents
        ag.move(actions, live)
        d = manhattan(ag.pos, self.food)
        reward = np.where(live, self.p.approach * (self.dist - d), 0.0)
        reward = reward + ag.penalties(live, self.p.step_cost, self.p.revisit)
        reached = live & (d == 0)
        bonus = self.p.goal_reward * np.maximum(0.1, 1.0 - ag.steps / self.max_steps)
        reward = reward + np.where(reached, bonus, 0.0)
        truncated = live & ~reached & (ag.steps >= self.max_steps)
        self.dist = d
        self.reached |= reached
        self.done |= reached | truncated
        return StepResult(self.obs(), reward, reached, truncated)

    def success(self) -> np.ndarray:
        """(n,) bool: food reached."""
        return self.reached.copy()

    def optimal_steps(self) -> np.ndarray:
        """(n,) fewest steps from each episode's start (BFS; 14 in the legacy preset)."""
        pos, heading = self.start
        return np.array(
            [
                shortest_path((int(p[0]), int(p[1])), int(h), (int(f[0]), int(f[1])), self.p.size)
                for p, h, f in zip(pos, heading, self.food)
            ],
            dtype=np.float64,
        )

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Turn toward the gradient (see :func:`greedy_actions`)."""
        return greedy_actions(obs)
