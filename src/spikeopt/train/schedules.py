"""Per-epoch schedules: the optimizer's learning rate and the surrogate's sharpness."""

from __future__ import annotations

import math

import torch

from spikeopt.config import ConfigError, NeuronConfig, SchedConfig, check_choices

LR_SCHEDULES = ("none", "step", "multistep", "cosine", "plateau", "exponential")
ALPHA_SCHEDULES = ("constant", "linear", "cosine", "exp", "step")

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def build_lr_scheduler(
    opt: torch.optim.Optimizer, cfg: SchedConfig, epochs: int
) -> Scheduler | None:
    """The configured torch LR scheduler (None for 'none'); stepped once per epoch."""
    check_choices(cfg)
    name, sched = cfg.name, torch.optim.lr_scheduler
    if name == "none":
        return None
    if name == "step":
        return sched.StepLR(opt, max(1, cfg.step_size), cfg.gamma)
    if name == "multistep":
        return sched.MultiStepLR(opt, cfg.milestones, cfg.gamma)
    if name == "cosine":
        return sched.CosineAnnealingLR(opt, max(1, epochs), cfg.min_lr)
    if name == "exponential":
        return sched.ExponentialLR(opt, cfg.gamma)
    return sched.ReduceLROnPlateau(opt, "min", cfg.gamma, cfg.patience, min_lr=cfg.min_lr)


def step_lr_scheduler(s: Scheduler | None, metrics: dict[str, float], cfg: SchedConfig) -> None:
    """Advance the scheduler by one epoch (plateau watches ``cfg.metric``)."""
    if s is None:
        return
    if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if cfg.metric not in metrics:
            raise ConfigError(
                f"sched.metric '{cfg.metric}' is not logged; one of {sorted(metrics)}"
            )
        s.step(metrics[cfg.metric])
    else:
        s.step()


def alpha_at(epoch: int, epochs: int, cfg: NeuronConfig, alpha0: float) -> float:
    """Surrogate sharpness at ``epoch`` (0-based) going from ``alpha0`` to ``cfg.alpha_end``."""
    check_choices(cfg)
    kind = cfg.alpha_schedule
    end = alpha0 if cfg.alpha_end is None else cfg.alpha_end
    frac = epoch / max(1, epochs - 1)
    if kind == "constant":
        return alpha0
    if kind == "linear":
        return alpha0 + (end - alpha0) * frac
    if kind == "cosine":
        return end + (alpha0 - end) * 0.5 * (1 + math.cos(math.pi * frac))
    if kind == "exp":
        if alpha0 <= 0 or end <= 0:
            raise ConfigError("neuron.alpha_schedule=exp needs positive alpha and alpha_end")
        return alpha0 * (end / alpha0) ** frac
    # step: move a fixed share of the way every alpha_step_every epochs
    n_steps = max(1, (epochs - 1) // max(1, cfg.alpha_step_every))
    done = min(n_steps, epoch // max(1, cfg.alpha_step_every))
    return alpha0 + (end - alpha0) * done / n_steps
