"""Control environments: the grid worlds (chemotaxis, foraging) and gymnasium tasks.

:func:`make_env` builds the :class:`BatchEnv` that ``env.*`` names; :func:`baselines` runs
the random and the greedy (hand-written heuristic) policies of a preset, the numbers every
control run reports beside its own. :class:`GridEnv` is the single-episode gymnasium view.
"""

from __future__ import annotations

from spikeopt.config import ConfigError, EnvConfig, check_choices, choose
from spikeopt.tasks.envs.base import (
    Actor,
    BatchEnv,
    Episodes,
    StepResult,
    episode_stats,
    random_actor,
    run_episodes,
)
from spikeopt.tasks.envs.chemotaxis import PRESETS as CHEMOTAXIS_PRESETS
from spikeopt.tasks.envs.chemotaxis import Chemotaxis
from spikeopt.tasks.envs.foraging import PRESETS as FORAGING_PRESETS
from spikeopt.tasks.envs.foraging import Foraging
from spikeopt.tasks.envs.gym import GYM_IDS, GymBatch
from spikeopt.tasks.envs.single import GridEnv

ENVS: tuple[str, ...] = ("chemotaxis", "foraging", "cartpole", "acrobot")


def make_env(cfg: EnvConfig) -> BatchEnv:
    """The batched environment ``cfg`` describes; bad names list the valid ones."""
    check_choices(cfg)
    name = cfg.name
    if cfg.max_steps < 0:
        raise ConfigError(f"env.max_steps must be >= 0 (0 = the preset's), got {cfg.max_steps}")
    # env.preset stays a plain name: which presets exist depends on env.name
    if name == "chemotaxis":
        return Chemotaxis(CHEMOTAXIS_PRESETS[choose("env.preset", cfg.preset, CHEMOTAXIS_PRESETS)],
                          cfg.max_steps)  # fmt: skip
    if name == "foraging":
        return Foraging(FORAGING_PRESETS[choose("env.preset", cfg.preset, FORAGING_PRESETS)],
                        cfg.max_steps)  # fmt: skip
    return GymBatch(name, cfg.max_steps)


def baselines(env: BatchEnv, episodes: int, seed: int) -> dict[str, float]:
    """``random_*`` and ``greedy_*`` success rate, return, steps and steps/optimal of the
    preset over ``episodes`` seeded episodes (the same seeds for both policies)."""
    seeds = [seed * 1_000_003 + 7_777_777 + i for i in range(episodes)]
    out: dict[str, float] = {}
    runs = {"random": random_actor(env.n_actions, seed), "greedy": lambda o, r: env.greedy(o)}
    for name, act in runs.items():
        stats = episode_stats(run_episodes(env, act, seeds))
        out.update({f"{name}_{k}": v for k, v in stats.items()})
    return out


__all__ = [
    "CHEMOTAXIS_PRESETS",
    "ENVS",
    "FORAGING_PRESETS",
    "GYM_IDS",
    "Actor",
    "BatchEnv",
    "Chemotaxis",
    "Episodes",
    "Foraging",
    "GridEnv",
    "GymBatch",
    "StepResult",
    "baselines",
    "episode_stats",
    "make_env",
    "random_actor",
    "run_episodes",
]
