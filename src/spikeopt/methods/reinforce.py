"""REINFORCE (Williams 1992) with a running baseline, entropy bonus and per-episode schedules.

One step is one update on a batch of finished episodes (``rl.batch_episodes``; 1 in the
predecessor's protocol). With ``e`` the number of episodes trained on before this update::

    G_t   = sum_k gamma^k r_{t+k}                 every reward, the goal bonus included
    A_t   = norm(G_t) - b      (normalize=returns: G standardised over the update's steps)
          = (G_t - b) / std(G) (normalize=advantages: the baseline centres, std only scales)
          = G_t - b            (normalize=none)
    b    <- (1 - ema) b + ema * mean(norm(G))     after use; the first update starts b at it
    beta  = entropy_start + (entropy_end - entropy_start) * min(1, e / entropy_episodes)
    lr    = optim.lr * (1 - lr_decay)^e       (rl.lr_decay = 0: the optimizer's, sched.*)
    loss  = -mean_t(A_t log pi(a_t | o_t)) - beta * mean_t(H(pi(. | o_t)))

then the shared ``apply_update``: gradient values clipped to ``optim.clip_value``, then the
norm to ``optim.clip_norm`` (both 1.0 in the predecessor's settings). The rollout ran without
gradients; the update re-runs the policy on every observation of the batch in one forward
pass (a spiking policy is deterministic given its input, so these are the logits it acted on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from spikeopt.config import Config, ConfigError, RLConfig, check_choices
from spikeopt.methods.base import (
    TrainState,
    apply_update,
    base_state_dict,
    build_optimizer,
    load_base_state,
)
from spikeopt.nn.policies import entropy, policy_logits

NORMALIZE: tuple[str, ...] = ("returns", "advantages", "none")
BASELINES: tuple[str, ...] = ("ema", "none")

# One finished episode: observations (L, D), actions (L,), rewards (L,).
Episode = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class RLState(TrainState):
    """TrainState plus the running baseline and the number of episodes trained on."""

    baseline: float | None = None
    episodes: int = 0


def discounted(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = r_t + gamma G_{t+1}`` for one episode (float64)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        out[t] = acc
    return out


def entropy_weight(episode: int, cfg: RLConfig) -> float:
    """The entropy bonus weight after ``episode`` episodes (linear decay, then constant)."""
    frac = min(1.0, episode / cfg.entropy_episodes) if cfg.entropy_episodes > 0 else 1.0
    return cfg.entropy_start + (cfg.entropy_end - cfg.entropy_start) * frac


def advantages(
    returns: np.ndarray, baseline: float | None, cfg: RLConfig
) -> tuple[np.ndarray, float]:
    """Advantages of the update's returns and the new baseline (see the module docstring)."""
    std = float(returns.std()) if len(returns) > 1 else 0.0
    g = (returns - returns.mean()) / (std + 1e-8) if cfg.normalize == "returns" else returns
    mean = float(g.mean())
    b = (mean if baseline is None else baseline) if cfg.baseline == "ema" else 0.0
    adv = g - b
    if cfg.normalize == "advantages" and std > 0:
        adv = adv / std
    new = (1 - cfg.baseline_ema) * b + cfg.baseline_ema * mean if cfg.baseline == "ema" else 0.0
    return adv, new


class REINFORCE:
    """Monte-Carlo policy gradient for the policies of :mod:`spikeopt.nn.policies`."""

    name = "reinforce"
    population = False  # runs a population through an Objective
    tasks: tuple[str, ...] = ("control",)  # the task kinds it can train
    sections: tuple[str, ...] = ()

    def __init__(self, cfg: Config, loss: Any = None) -> None:
        r = cfg.rl
        check_choices(r)
        if not 0 <= r.gamma <= 1:
            raise ConfigError(f"rl.gamma must be in [0, 1], got {r.gamma}")
        if not 0 < r.baseline_ema <= 1:
            raise ConfigError(f"rl.baseline_ema must be in (0, 1], got {r.baseline_ema}")
        if not 0 <= r.lr_decay < 1:
            raise ConfigError(f"rl.lr_decay must be in [0, 1), got {r.lr_decay}")
        if r.lr_decay > 0 and cfg.sched.name != "none":  # both would set the learning rate
            raise ConfigError(
                "rl.lr_decay is REINFORCE's per-episode learning-rate schedule; "
                "set sched.name=none or rl.lr_decay=0"
            )
        if r.entropy_episodes < 0:
            raise ConfigError(f"rl.entropy_episodes must be >= 0, got {r.entropy_episodes}")
        self.cfg = cfg

    def init(self, model: nn.Module, cfg: Config) -> RLState:
        """Optimizer over the policy's parameters, no baseline yet."""
        return RLState(model, build_optimizer(list(model.parameters()), cfg.optim))

    def step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, float]]:
        """One policy-gradient update on ``batch``, a list of finished :data:`Episode`."""
        assert isinstance(state, RLState)
        r, model = self.cfg.rl, state.model
        if not batch or any(len(a) == 0 for _, a, _ in batch):
            raise ValueError("REINFORCE needs at least one episode with at least one step")
        returns = np.concatenate([discounted(rw, r.gamma) for _, _, rw in batch])
        adv, state.baseline = advantages(returns, state.baseline, r)
        beta = entropy_weight(state.episodes, r)
        assert state.optimizer is not None, "REINFORCE steps a torch optimizer"
        if r.lr_decay > 0:  # otherwise the learning rate is the optimizer's (and sched.*'s)
            for group in state.optimizer.param_groups:
                group["lr"] = self.cfg.optim.lr * (1 - r.lr_decay) ** state.episodes
        lr = float(state.optimizer.param_groups[0]["lr"])
        model.train()
        obs = np.concatenate([o for o, _, _ in batch])
        actions = torch.as_tensor(np.concatenate([a for _, a, _ in batch]), dtype=torch.long)
        logits, spikes = policy_logits(model, obs, self.cfg)
        logp = torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)
        ent = entropy(logits).mean()
        policy_loss = -(torch.as_tensor(adv, dtype=logp.dtype) * logp).mean()
        loss = policy_loss - beta * ent
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = apply_update(state, self.cfg.optim)
        state.episodes += len(batch)
        metrics = {
            "loss": float(loss.detach()),
            "policy_loss": float(policy_loss.detach()),
            "entropy": float(ent.detach()),
            "entropy_weight": beta,
            "lr": lr,
            "grad_norm": grad_norm if math.isfinite(grad_norm) else math.nan,
            "baseline": float(state.baseline),
        }
        for i, s in enumerate(spikes):
            metrics[f"layer{i}_rate"] = float(s.detach().mean())
        return state, metrics

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Model, optimizer, step, baseline and episode count."""
        assert isinstance(state, RLState)
        return {**base_state_dict(state), "baseline": state.baseline, "episodes": state.episodes}

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """Restore a saved state into ``state``."""
        assert isinstance(state, RLState)
        load_base_state(state, d)
        state.baseline, state.episodes = d["baseline"], int(d["episodes"])
        return state
