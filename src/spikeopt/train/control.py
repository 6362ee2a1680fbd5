"""The control loop: episodes -> method.step -> one metrics row per episode -> outputs.

REINFORCE: each update runs ``rl.batch_episodes`` episodes together (sampling actions),
hands them to the method, and logs one row per episode. Population methods (``es``,
``snes``, ``cma``): each generation evaluates the population on ``rl.batch_episodes``
shared seeds (:class:`~spikeopt.train.rollout.ControlObjective`) and logs one row for the
centre policy's episodes. After every update: ``metrics.csv``, TensorBoard scalars and an
atomic checkpoint; at the end the evaluation episodes, the random and greedy baselines of
the preset, ``summary.json`` (DESIGN.md's control keys) and ``curves.png``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from spikeopt import config as C
from spikeopt.methods import METHODS, Method, TrainState
from spikeopt.methods.reinforce import REINFORCE
from spikeopt.nn import n_params
from spikeopt.nn.policies import build_policy
from spikeopt.tasks.envs import BatchEnv, baselines, episode_stats, make_env
from spikeopt.train import outputs as io
from spikeopt.train.control_metrics import session_metrics
from spikeopt.train.loop import Callback, pick_device, versions
from spikeopt.train.rollout import (
    EVAL,
    GENERATION,
    SAMPLING,
    TRAIN,
    ControlObjective,
    episode_seed,
    run_policy,
)

POPULATION_METHODS: tuple[str, ...] = ("es", "snes", "cma")


def build_control(cfg: C.Config) -> tuple[BatchEnv, Method, TrainState]:
    """Environment, policy and method of a control run; every bad setting raises here."""
    if pick_device(cfg.trainer.device).type != "cpu":
        raise C.ConfigError("control runs step environments on the CPU; set trainer.device=cpu")
    name = C.choose("method.name", cfg.method.name, ("reinforce", *POPULATION_METHODS))
    r = cfg.rl
    if r.batch_episodes < 1 or r.episodes < 1 or r.generations < 1 or r.eval_episodes < 0:
        raise C.ConfigError(
            "rl.batch_episodes, rl.episodes and rl.generations must be >= 1 and "
            "rl.eval_episodes >= 0"
        )
    if r.converge_window < 1 or not 0 < r.converge_level <= 1 or r.baseline_episodes < 0:
        raise C.ConfigError(
            "rl.converge_window must be >= 1, rl.converge_level in (0, 1] and "
            "rl.baseline_episodes >= 0"
        )
    env = make_env(cfg.env)
    torch.manual_seed(cfg.trainer.seed)
    model = build_policy(cfg, env.obs_dim, env.n_actions)
    if name == "reinforce":
        method: Any = REINFORCE(cfg)
    else:
        method = METHODS[name](cfg, None, ControlObjective(make_env(cfg.env), cfg))  # type: ignore[call-arg,arg-type]
    return env, method, method.init(model, cfg)


def _updates(cfg: C.Config) -> int:
    r = cfg.rl
    if cfg.method.name == "reinforce":
        return math.ceil(r.episodes / r.batch_episodes)
    return r.generations


def _reinforce_update(
    cfg: C.Config, env: BatchEnv, method: Method, state: TrainState, u: int
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Run one update's episodes, train on them, and return one row per episode."""
    r, seed = cfg.rl, cfg.trainer.seed
    first = u * r.batch_episodes
    index = range(first, min(first + r.batch_episodes, r.episodes))
    seeds = [episode_seed(seed, TRAIN, i) for i in index]
    ep, acts = run_policy(env, state.model, cfg, seeds, False, episode_seed(seed, SAMPLING, u))
    episodes: Any = [ep.episode(i) for i in range(len(seeds))]  # REINFORCE's batch
    state, metrics = method.step(state, episodes)
    rows = []
    for j, i in enumerate(index):
        steps = int(ep.lengths[j])
        rows.append({
            "episode": i + 1,
            "update": u + 1,
            "return": float(ep.returns[j]),
            "steps": steps,
            "success": float(ep.success[j]),
            "optimal_steps": float(ep.optimal[j]),
            "steps_ratio": steps / float(ep.optimal[j]),
            **acts,
            **metrics,
        })  # fmt: skip
    return state, rows


def _population_update(
    cfg: C.Config, method: Method, state: TrainState, u: int
) -> tuple[TrainState, list[dict[str, Any]]]:
    """One generation on shared seeds; one row for the centre policy's episodes."""
    seeds: Any = [episode_seed(cfg.trainer.seed, GENERATION, u * 10_000 + i)
                  for i in range(cfg.rl.batch_episodes)]  # fmt: skip
    state, metrics = method.step(state, seeds)
    ep = method.objective.last  # type: ignore[attr-defined]
    row = {
        "episode": (u + 1) * len(seeds),
        "update": u + 1,
        "success": metrics.pop("success_rate"),
        "optimal_steps": float(np.mean(ep.optimal)),
        **metrics,
    }
    return state, [row]


def train_control(
    cfg: C.Config,
    out: Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    callbacks: list[Callback] | None = None,
    name: str = "",
) -> dict[str, Any]:
    """Run a control config to the end; returns the summary (written to ``out`` if given)."""
    env, method, state = build_control(cfg)
    updates = _updates(cfg)
    rows: list[dict[str, Any]] = []
    start, wall0 = 0, 0.0
    if resume:
        assert out is not None
        ck = io.load_checkpoint(out / "checkpoint.pt")
        state = method.load_state_dict(state, ck["method"])
        rows, start, wall0 = ck["rows"], ck["update"], ck["wall_s"]
    tb = None
    if out is not None:
        io.write_text(out / "config.yaml", C.dump_yaml(cfg))
        # events after the checkpoint (a crash between writes) are dropped on resume
        purge = int(rows[-1]["episode"]) + 1 if resume and rows else None
        tb = io.TensorBoard(out / "tb", purge_step=purge)
    t0 = time.perf_counter() - wall0
    population = cfg.method.name in POPULATION_METHODS
    bar = tqdm(range(start, updates), total=updates, initial=start, desc=name or "control",
               disable=quiet or not cfg.trainer.progress, dynamic_ncols=True)  # fmt: skip
    for u in bar:
        if population:
            state, new = _population_update(cfg, method, state, u)
        else:
            state, new = _reinforce_update(cfg, env, method, state, u)
        wall = time.perf_counter() - t0
        for row in new:
            row["wall_s"] = wall
        rows.extend(new)
        bar.set_postfix(ret=f"{new[-1]['return']:.2f}", success=f"{new[-1]['success']:.2f}")
        if out is not None and tb is not None:
            io.write_csv(out / "metrics.csv", rows)
            for row in new:
                tb.log(row, int(row["episode"]))
            payload = {"method": method.state_dict(state), "rows": rows, "update": u + 1}
            io.save_checkpoint(out / "checkpoint.pt", {**payload, "wall_s": wall})
        for cb in callbacks or []:
            for row in new:
                cb(row)
    summary = summarize(cfg, env, state, rows, name)
    if out is not None and tb is not None:
        tb.close()
        io.write_json(out / "summary.json", summary)
        plot_control(out / "curves.png", rows, summary, name or cfg.env.name)
    return summary


def summarize(
    cfg: C.Config, env: BatchEnv, state: TrainState, rows: list[dict[str, Any]], name: str
) -> dict[str, Any]:
    """Session metrics, evaluation episodes and baselines: DESIGN.md's control keys and more."""
    r, seed = cfg.rl, cfg.trainer.seed
    col = {k: [row[k] for row in rows] for k in ("success", "steps", "optimal_steps", "return")}
    session = session_metrics(col["success"], col["steps"], col["optimal_steps"], col["return"],
                              r.converge_window, r.converge_level)  # fmt: skip
    eval_seeds = [episode_seed(seed, EVAL, i) for i in range(r.eval_episodes)]
    greedy = r.eval_greedy or cfg.method.name in POPULATION_METHODS
    ev: dict[str, float] = {}
    if eval_seeds:
        ep, _ = run_policy(
            env, state.model, cfg, eval_seeds, greedy, episode_seed(seed, SAMPLING, 10**9)
        )
        ev = {f"eval_{k}": v for k, v in episode_stats(ep).items()}
    base = baselines(env, r.baseline_episodes, seed) if r.baseline_episodes > 0 else {}
    return {
        "recipe": name,
        "method": cfg.method.name,
        "env": cfg.env.name,
        "preset": cfg.env.preset if cfg.env.name in ("chemotaxis", "foraging") else cfg.env.name,
        **session,
        **ev,
        **base,
        "episodes": len(rows) if cfg.method.name == "reinforce" else rows[-1]["episode"],
        # every episode an environment ran for training (population methods: P members + centre)
        "env_episodes": len(rows)
        if cfg.method.name == "reinforce"
        else state.step * r.batch_episodes * (cfg.es.population + 1),
        "iterations": state.step,
        "wall_s": rows[-1]["wall_s"] if rows else 0.0,
        "n_params": n_params(state.model),
        "seed": seed,
        "versions": versions(),
    }


def plot_curves_rows(ax: Any, rows: list[dict[str, Any]], key: str, window: int = 10) -> None:
    """One metric per episode and its running mean over ``window`` episodes."""
    x = [r["episode"] for r in rows]
    y = np.array([float(r.get(key, math.nan)) for r in rows])
    ax.plot(x, y, lw=0.8, alpha=0.5, label=key)
    if len(y) >= window:
        smooth = np.convolve(y, np.ones(window) / window, "valid")
        ax.plot(x[window - 1 :], smooth, lw=1.8, label=f"{key} (mean of {window})")
    ax.set_xlabel("episode")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_control(
    path: Path, rows: list[dict[str, Any]], summary: dict[str, Any], title: str
) -> None:
    """Return, success and steps per episode, with the random/greedy baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, key in zip(axes, ("return", "success", "steps")):
        plot_curves_rows(ax, rows, key)
        for who, style in (("random", ":"), ("greedy", "--")):
            ref = summary.get(f"{who}_{'success_rate' if key == 'success' else key}")
            if isinstance(ref, float) and math.isfinite(ref):
                ax.axhline(ref, ls=style, color="grey", lw=1, label=who)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with io.atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
