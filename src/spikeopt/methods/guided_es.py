"""Guided ES: antithetic ES whose search covariance leans toward recent surrogate gradients.

Maheswaranathan et al. 2019 ("Guided evolutionary strategies"). With ``n`` parameters and
``U`` (n, k) an orthonormal basis (QR) of the last ``k`` surrogate gradients::

    Sigma   = (alpha / n) I + ((1 - alpha) / k) U U^T
    e_j     = sqrt(alpha) z_j + sqrt((1 - alpha) n / k) U u_j     z ~ N(0, I_n), u ~ N(0, I_k)
    theta_m = theta + sigma * s_m * e_(m//2)                      antithetic pairs
    g       = 1 / (P sigma) * sum_m w_m s_m e_m                   w = shaping(-loss)

``e`` has covariance ``n Sigma``: the factor ``n`` makes ``sigma`` the per-weight noise scale
of plain ES (``alpha = 1`` *is* full-rank ES with ``es.sigma``). The surrogate gradient is
biased, so it only steers where ES searches; the step follows the true (hard-spike) loss.
Members are explicit :class:`~spikeopt.population.Offsets` (the covariance is not isotropic),
so the population is held whole: suited to models up to a few hundred thousand parameters.

The first ``guided.warmup_steps`` steps are plain BPTT (a surrogate warm start), then guided
ES fine-tunes on the true loss: the surrogate-then-ES schedule is one method, one state.
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
    backprop,
    base_state_dict,
    build_optimizer,
    load_base_state,
    surrogate_grads,
)
from spikeopt.methods.es import ES, cap_update, fitness_stats, sigma_at
from spikeopt.methods.hybrid import forked_rng
from spikeopt.methods.objective import Classification, Objective, cosine
from spikeopt.population import Offsets, perturbed


@dataclass
class GuidedState(TrainState):
    """TrainState plus the recent surrogate gradients (flat, newest last) spanning U."""

    history: list[Tensor] = field(default_factory=list)


def subspace(history: list[Tensor]) -> Tensor:
    """Orthonormal basis U (n, k') of the non-zero vectors in ``history`` (k' may be 0)."""
    cols = [g for g in history if float(g.norm()) > 0]
    if not cols:
        return torch.zeros(history[0].numel() if history else 0, 0)
    q, _ = torch.linalg.qr(torch.stack(cols, 1))
    return q


def sample(n_pairs: int, u: Tensor, alpha: float, generator: torch.Generator) -> Tensor:
    """``n_pairs`` search directions (n_pairs, n) with covariance ``n Sigma`` (module doc)."""
    n, k = u.shape
    z = torch.randn(n_pairs, n, generator=generator, dtype=u.dtype, device=u.device)
    e = math.sqrt(alpha) * z
    if k and alpha < 1:
        w = torch.randn(n_pairs, k, generator=generator, dtype=u.dtype, device=u.device)
        e += math.sqrt((1 - alpha) * n / k) * (w @ u.T)
    elif alpha < 1:  # no direction to guide by yet: all the variance goes to the full space
        e = z
    return e


class GuidedES:
    """Guided ES after an optional BPTT warm start (see module doc).

    Metrics of a step: ``loss``/``acc`` of the BPTT forward before the update, ``es_phase``
    (0 during warm-up, 1 after), ``grad_norm``; in the ES phase also ``update_norm``,
    ``sigma``, ``subspace_dim`` (k' <= k), ``cos_surrogate`` (cosine of the estimated loss
    gradient with the surrogate gradient) and the population's ``fit_*`` statistics.
    """

    name = "guided-es"

    def __init__(self, cfg: Config, loss: Loss, objective: Objective | None = None) -> None:
        g = cfg.guided
        if not 0 <= g.alpha <= 1:
            raise ConfigError(f"guided.alpha must be in [0, 1] (1 = plain ES), got {g.alpha}")
        if g.k < 1:
            raise ConfigError(f"guided.k must be >= 1 surrogate gradient, got {g.k}")
        if g.warmup_steps < 0:
            raise ConfigError(f"guided.warmup_steps must be >= 0, got {g.warmup_steps}")
        self.cfg, self.loss = cfg, loss
        self.objective = objective if objective is not None else Classification(loss, cfg.es)
        self.es = ES(cfg, loss, self.objective)  # its shaping, seed and es.* checks

    def init(self, model: nn.Module, cfg: Config) -> GuidedState:
        """Optimizer over the model's parameters, an empty gradient history."""
        return GuidedState(model, build_optimizer(list(model.parameters()), cfg.optim))

    def step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, float]]:
        """BPTT for the surrogate gradient; then either apply it (warm-up) or guide ES by it."""
        assert isinstance(state, GuidedState)
        x, model, gc = batch[0], state.model, self.cfg.guided
        rng = torch.get_rng_state()
        metrics = backprop(state, self.loss, batch)
        params = [p for _, p in perturbed(model)]
        g_s = torch.cat([g.flatten() for g in surrogate_grads(params)])
        state.history = [*state.history, g_s][-gc.k :]
        if state.step < gc.warmup_steps:
            return state, {
                **metrics,
                "es_phase": 0.0,
                "grad_norm": apply_update(state, self.cfg.optim),
            }
        state.optimizer.zero_grad(set_to_none=True)
        e_cfg, sigma = self.cfg.es, sigma_at(state.step, self.cfg.es)
        gen = torch.Generator(device=g_s.device)
        gen.manual_seed((self.es.seed * 1_000_003 + state.step) % 2**63)
        u = subspace(state.history)
        e = sample(e_cfg.population // 2, u, gc.alpha, gen)
        members = torch.stack((e, -e), 1).flatten(0, 1)  # +e_0, -e_0, +e_1, ...
        deltas = [d.view(-1, *p.shape) for d, p in zip(_split(sigma * members, params), params)]
        with forked_rng(x.device):
            torch.set_rng_state(rng)
            fitness = self.objective.fitness(model, Offsets(params, deltas), batch)
        w = self.es.shaping(fitness).to(e.dtype)
        g = ((w[0::2] - w[1::2]) @ e) / (e_cfg.population * sigma)  # uphill in fitness
        for p, gp in zip(params, _split(-g, params)):
            p.grad = gp.view_as(p)
        before = [p.detach().clone() for p in params]
        grad_norm = apply_update(state, self.cfg.optim)
        return state, {
            **metrics,
            "es_phase": 1.0,
            "grad_norm": grad_norm,
            "update_norm": cap_update(params, before, e_cfg.max_update),
            "sigma": sigma,
            "subspace_dim": float(u.shape[1]),
            "cos_surrogate": cosine([-g], [g_s]),
            **fitness_stats(fitness),
        }

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Model, optimizer, step counter and the gradient history (the noise follows from
        the step)."""
        assert isinstance(state, GuidedState)
        return {**base_state_dict(state), "history": [h.clone() for h in state.history]}

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """Restore a saved state into ``state``."""
        assert isinstance(state, GuidedState)
        load_base_state(state, d)
        state.history = list(d["history"])
        return state


def _split(flat: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    """Split the last axis of ``flat`` into one chunk per parameter."""
    return list(flat.split([p.numel() for p in params], dim=-1))
