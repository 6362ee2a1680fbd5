"""Separable NES: ES with its own step size for every parameter, adapted as it learns.

One generation (Schaul, Glasmachers & Schmidhuber 2011, SNES)::

    z_m ~ N(0, I)                               full-rank, regenerated from (seed, step, m)
    theta_m = theta + sigma * z_m                m = 0 .. P-1
    u       = shaping(f)                         es.shaping, centered ranks by default
    v       = nes_utility(f)                     only the better half pulls
    g_theta = sigma * sum_m u_m z_m / P          the natural gradient of the mean
    sigma  *= exp(eta_sigma / 2 * sum_m v_m (z_m^2 - 1))

Members are independent, not antithetic pairs as in ES: a mirrored pair has the same
``z^2``, so its two fitnesses would only tell the widths about curvature -- never that a
bigger step along a slope pays -- and the widths could only shrink. For the same reason
the widths always use NES utilities: symmetric weights such as centered ranks are
uncorrelated with ``z^2`` on a slope.

``g_theta`` goes to the shared torch optimizer like the ES estimate. The sigma update widens
the search along parameters where larger steps paid off and narrows it where they did not,
which suits policies and small networks whose parameters live on very different scales.
Members are explicit :class:`~spikeopt.population.Offsets` (``P x n_params`` floats), so SNES
is meant for networks up to a few hundred thousand parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError
from spikeopt.functional.loss import Loss
from spikeopt.methods.base import (
    TrainState,
    apply_update,
    base_state_dict,
    build_optimizer,
    load_base_state,
)
from spikeopt.methods.es import cap_update, fitness_stats
from spikeopt.methods.objective import Classification, Objective
from spikeopt.population import Noise, Offsets, Perturbation, get_shaping, perturbed
from spikeopt.population.shaping import nes_utility


@dataclass
class SNESState(TrainState):
    """TrainState plus the per-parameter search widths."""

    sigmas: list[Tensor] = field(default_factory=list)


def default_sigma_lr(n: int) -> float:
    """SNES's recommended learning rate of the search widths, ``(3 + ln n) / (5 sqrt n)``."""
    return (3 + math.log(n)) / (5 * math.sqrt(n))


class SNES:
    """Separable NES on the :class:`~spikeopt.methods.base.Method` protocol."""

    name = "snes"

    def __init__(self, cfg: Config, loss: Loss, objective: Objective | None = None) -> None:
        e = cfg.es
        self.cfg = cfg
        self.objective = objective if objective is not None else Classification(loss, e)
        self.shaping = get_shaping(e.shaping)
        if e.sigma_lr < 0:
            raise ConfigError(f"es.sigma_lr must be >= 0 (0 = SNES default), got {e.sigma_lr}")
        if not 0 < e.sigma_floor <= e.sigma:
            raise ConfigError(f"es.sigma_floor must be in (0, es.sigma], got {e.sigma_floor}")
        if e.population < 2:
            raise ConfigError(f"es.population must be >= 2, got {e.population}")
        self.seed = cfg.trainer.seed * 2**32 + e.noise_seed

    def perturbation(self, step: int) -> Perturbation:
        """Unit full-rank noise of generation ``step``; the widths scale it per parameter."""
        # members are independent: member m reads the noise ES would give pair m
        return Perturbation(2 * self.cfg.es.population, 1.0, 1, "full", self.seed, step)

    def init(self, model: nn.Module, cfg: Config) -> SNESState:
        """Optimizer over the parameters; every width starts at ``es.sigma``."""
        params = [p for _, p in perturbed(model)]
        sigmas = [torch.full_like(p, cfg.es.sigma, requires_grad=False) for p in params]
        return SNESState(model, build_optimizer(list(model.parameters()), cfg.optim), sigmas=sigmas)

    def step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, float]]:
        """One generation: sample, evaluate, update the mean (optimizer) and the widths."""
        assert isinstance(state, SNESState)
        e, model = self.cfg.es, state.model
        model.train()
        params = [p for _, p in perturbed(model)]
        pert = self.perturbation(state.step)
        z = [zk for zk in Noise(params, pert).pairs(0, e.population)]  # (P, *p.shape) each
        assert all(isinstance(zk, Tensor) for zk in z)  # full mode: no low-rank factors
        zs: list[Tensor] = z  # type: ignore[assignment]
        offsets = [s * zk for s, zk in zip(state.sigmas, zs)]
        centre = self.objective.centre(model, batch)
        fitness = self.objective.fitness(model, Offsets(params, offsets), batch)
        u, v = self.shaping(fitness), nes_utility(fitness)
        eta = e.sigma_lr or default_sigma_lr(sum(p.numel() for p in params))
        state.optimizer.zero_grad(set_to_none=True)
        for p, s, zk in zip(params, state.sigmas, zs):
            w = u.to(p.device, p.dtype)
            p.grad = -s * torch.tensordot(w, zk, dims=1) / e.population
            grow = torch.tensordot(v.to(p.device, p.dtype), zk.pow(2) - 1, dims=1)
            s.mul_(torch.exp(0.5 * eta * grow)).clamp_(min=e.sigma_floor)
        before = [p.detach().clone() for p in params]
        grad_norm = apply_update(state, self.cfg.optim)
        update_norm = cap_update(params, before, e.max_update)
        flat = torch.cat([s.flatten() for s in state.sigmas])
        return state, {
            **centre,
            "grad_norm": grad_norm,
            "update_norm": update_norm,
            "sigma": float(flat.mean()),
            "sigma_min": float(flat.min()),
            "sigma_max": float(flat.max()),
            **fitness_stats(fitness),
        }

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Model, optimizer, step and the per-parameter widths."""
        assert isinstance(state, SNESState)
        return {**base_state_dict(state), "sigmas": [s.clone() for s in state.sigmas]}

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """Restore a saved state into ``state``."""
        assert isinstance(state, SNESState)
        load_base_state(state, d)
        for s, saved in zip(state.sigmas, d["sigmas"]):
            s.copy_(saved)
        return state
