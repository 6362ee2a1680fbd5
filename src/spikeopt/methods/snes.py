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
from spikeopt.methods.base import TrainState
from spikeopt.methods.strategy import Generation, Strategy
from spikeopt.population import Noise, Offsets, Perturbation, perturbed
from spikeopt.population.shaping import nes_utility


@dataclass
class SNESState(TrainState):
    """TrainState plus the per-parameter search widths."""

    sigmas: list[Tensor] = field(default_factory=list)


def default_sigma_lr(n: int) -> float:
    """SNES's recommended learning rate of the search widths, ``(3 + ln n) / (5 sqrt n)``."""
    return (3 + math.log(n)) / (5 * math.sqrt(n))


class SNES(Strategy):
    """Separable NES. Metrics beyond the base's: ``sigma`` (mean width), ``sigma_min``,
    ``sigma_max``."""

    name = "snes"
    state_type = SNESState

    def check(self, cfg: Config) -> None:
        """Width learning rate, floor and population."""
        e = cfg.es
        if e.sigma_lr < 0:
            raise ConfigError(f"es.sigma_lr must be >= 0 (0 = SNES default), got {e.sigma_lr}")
        if not 0 < e.sigma_floor <= e.sigma:
            raise ConfigError(f"es.sigma_floor must be in (0, es.sigma], got {e.sigma_floor}")
        if e.population < 2:
            raise ConfigError(f"es.population must be >= 2, got {e.population}")

    def start(self, model: nn.Module, cfg: Config) -> dict[str, Any]:
        """Every width starts at ``es.sigma``."""
        params = [p for _, p in perturbed(model)]
        return {"sigmas": [torch.full_like(p, cfg.es.sigma, requires_grad=False) for p in params]}

    def ask(self, state: TrainState, gen: Generation) -> Offsets:
        """Unit full-rank noise scaled by the widths; member m reads the noise ES would give
        pair m (members are independent)."""
        assert isinstance(state, SNESState)
        pert = Perturbation(2 * self.cfg.es.population, 1.0, 1, "full", self.seed, state.step)
        # full mode: one (P, *p.shape) tensor per parameter, no low-rank factors
        z = [zk for zk in Noise(gen.params, pert).pairs(0, self.cfg.es.population)
             if isinstance(zk, Tensor)]  # fmt: skip
        gen.aux = z
        return Offsets(gen.params, [s * zk for s, zk in zip(state.sigmas, z)])

    def tell(self, state: TrainState, gen: Generation) -> list[Tensor]:
        """The mean's gradient for the optimizer; the widths grow or shrink in place."""
        assert isinstance(state, SNESState) and gen.fitness is not None
        e = self.cfg.es
        u, v = self.shaping(gen.fitness), nes_utility(gen.fitness)
        eta = e.sigma_lr or default_sigma_lr(sum(p.numel() for p in gen.params))
        grads = []
        for p, s, zk in zip(gen.params, state.sigmas, gen.aux):
            grads.append(-s * torch.tensordot(u.to(p.device, p.dtype), zk, dims=1) / e.population)
            grow = torch.tensordot(v.to(p.device, p.dtype), zk.pow(2) - 1, dims=1)
            s.mul_(torch.exp(0.5 * eta * grow)).clamp_(min=e.sigma_floor)
        flat = torch.cat([s.flatten() for s in state.sigmas])
        gen.metrics.update(
            {
                "sigma": float(flat.mean()),
                "sigma_min": float(flat.min()),
                "sigma_max": float(flat.max()),
            }
        )
        return grads

    def save(self, state: TrainState) -> dict[str, Any]:
        """The per-parameter widths."""
        assert isinstance(state, SNESState)
        return {"sigmas": [s.clone() for s in state.sigmas]}

    def load(self, state: TrainState, d: dict[str, Any]) -> None:
        """Restore the widths."""
        assert isinstance(state, SNESState)
        for s, saved in zip(state.sigmas, d["sigmas"]):
            s.copy_(saved)
