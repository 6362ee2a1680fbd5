"""The batched-environment protocol and the one rollout loop every control path uses.

A :class:`BatchEnv` steps ``n`` independent episodes together on arrays (numpy for the grid
worlds, a list of gymnasium envs for CartPole/Acrobot): ``reset(seeds) -> obs (n, D)``,
``step(actions (n,)) -> StepResult``. An episode that has ended is frozen: it ignores its
actions, earns 0 and keeps its final observation, so a batch runs until its longest episode
ends. :func:`run_episodes` is that loop; REINFORCE, the ES objective and the baselines all
call it, so an episode means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np


class StepResult(NamedTuple):
    """What one batched step returns; every array has a leading axis ``n``."""

    obs: np.ndarray  # (n, D) float32
    reward: np.ndarray  # (n,) float64, 0 for frozen episodes
    terminated: np.ndarray  # (n,) bool: reached a terminal state (the goal, or a fall)
    truncated: np.ndarray  # (n,) bool: ran out of steps


class BatchEnv(Protocol):
    """``n`` episodes stepped together; see the module docstring for the frozen-episode rule."""

    n: int
    obs_dim: int
    n_actions: int
    max_steps: int

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Start ``len(seeds)`` episodes (this sets ``n``); returns observations (n, D)."""
        ...

    def step(self, actions: np.ndarray) -> StepResult:
        """Advance every running episode by one action."""
        ...

    def success(self) -> np.ndarray:
        """(n,) bool: did each episode succeed (goal reached, pole kept up, target eaten)."""
        ...

    def optimal_steps(self) -> np.ndarray:
        """(n,) float: fewest steps that could have solved each episode (NaN when undefined)."""
        ...

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """(n,) int: the preset's hand-written heuristic action for each observation."""
        ...


# act(obs (n, D), running (n,) bool) -> actions (n,)
Actor = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Episodes:
    """A batch of finished episodes, step-major: entry t holds every episode's step t."""

    obs: list[np.ndarray]  # T x (n, D): the observation each action was chosen on
    actions: list[np.ndarray]  # T x (n,)
    rewards: list[np.ndarray]  # T x (n,)
    running: list[np.ndarray]  # T x (n,) bool: which episodes were still running at step t
    success: np.ndarray  # (n,) bool
    optimal: np.ndarray  # (n,) float

    @property
    def lengths(self) -> np.ndarray:
        """(n,) steps taken by each episode."""
        return np.sum(self.running, axis=0).astype(np.int64)

    @property
    def returns(self) -> np.ndarray:
        """(n,) undiscounted return of each episode (every reward, the goal's included)."""
        return np.sum(self.rewards, axis=0)

    def episode(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(obs (L, D), actions (L,), rewards (L,)) of episode ``i``."""
        n = int(self.lengths[i])
        return (
            np.stack([o[i] for o in self.obs[:n]]),
            np.array([a[i] for a in self.actions[:n]]),
            np.array([r[i] for r in self.rewards[:n]]),
        )


def run_episodes(env: BatchEnv, act: Actor, seeds: Sequence[int]) -> Episodes:
    """Run one episode per seed to its end, all in one batch."""
    obs = env.reset(seeds)
    running = np.ones(len(seeds), dtype=bool)
    out = Episodes([], [], [], [], np.zeros(0, bool), np.zeros(0))
    while running.any():
        actions = np.asarray(act(obs, running), dtype=np.int64)
        res = env.step(actions)
        out.obs.append(obs)
        out.actions.append(actions)
        out.rewards.append(res.reward * running)
        out.running.append(running)
        running = running & ~(res.terminated | res.truncated)
        obs = res.obs
    out.success = env.success()
    out.optimal = env.optimal_steps()
    return out


def random_actor(n_actions: int, seed: int) -> Actor:
    """Uniformly random actions from a seeded generator."""
    rng = np.random.default_rng(seed)
    return lambda obs, running: rng.integers(0, n_actions, len(obs))


def episode_stats(ep: Episodes) -> dict[str, float]:
    """Mean success, return, steps and steps/optimal of a batch of episodes."""
    lengths = ep.lengths.astype(np.float64)
    ratio = lengths / ep.optimal
    return {
        "success_rate": float(ep.success.mean()),
        "return": float(ep.returns.mean()),
        "steps": float(lengths.mean()),
        "steps_ratio": float(np.mean(ratio)) if np.isfinite(ratio).all() else float("nan"),
    }
