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
from spikeopt.methods.base import TrainState, apply_update, backprop, surrogate_grads
from spikeopt.methods.strategy import Generation, Strategy, check_sigma, sigma_at
from spikeopt.population import Offsets


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


class GuidedES(Strategy):
    """Guided ES after an optional BPTT warm start (see module doc).

    Metrics of a step: ``loss``/``acc`` of the BPTT forward before the update, ``es_phase``
    (0 during warm-up, 1 after), ``grad_norm``; in the ES phase also ``update_norm``,
    ``sigma``, ``subspace_dim`` (k' <= k), ``cos_surrogate`` (cosine of the estimated loss
    gradient with the surrogate gradient) and the population's ``fit_*`` statistics.
    """

    name = "guided-es"
    tasks = ("classification",)
    sections = ("es", "guided")
    state_type = GuidedState

    def check(self, cfg: Config) -> None:
        """alpha, k and the warm-up length."""
        g = cfg.guided
        if not 0 <= g.alpha <= 1:
            raise ConfigError(f"guided.alpha must be in [0, 1] (1 = plain ES), got {g.alpha}")
        if g.k < 1:
            raise ConfigError(f"guided.k must be >= 1 surrogate gradient, got {g.k}")
        if g.warmup_steps < 0:
            raise ConfigError(f"guided.warmup_steps must be >= 0, got {g.warmup_steps}")
        check_sigma(cfg.es)
        if cfg.es.population < 2 or cfg.es.population % 2:
            raise ConfigError(
                f"es.population must be even and >= 2 (antithetic pairs), got {cfg.es.population}"
            )

    def step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, float]]:
        """During warm-up: the BPTT step; after it, one guided generation."""
        if state.step >= self.cfg.guided.warmup_steps:
            state, metrics = super().step(state, batch)
            return state, {**metrics, "es_phase": 1.0}
        gen = Generation(batch, [p for p in state.model.parameters() if p.requires_grad])
        self.centre(state, gen)
        grad_norm = apply_update(state, self.cfg.optim)
        return state, {**gen.metrics, "es_phase": 0.0, "grad_norm": grad_norm}

    def passes(self, step: int) -> tuple[int, int]:
        """BPTT during warm-up; BPTT and the population after it."""
        warm = step < self.cfg.guided.warmup_steps
        return (1, 1) if warm else (1 + self.cfg.es.population, 1)

    def centre(self, state: TrainState, gen: Generation) -> None:
        """BPTT for the surrogate gradient, which joins the history that spans U."""
        assert isinstance(state, GuidedState) and self.loss is not None
        gen.rng = torch.get_rng_state()
        gen.metrics.update(backprop(state, self.loss, gen.batch))
        gen.surrogate = surrogate_grads(gen.params)
        flat = torch.cat([g.flatten() for g in gen.surrogate])
        state.history = [*state.history, flat][-self.cfg.guided.k :]

    def ask(self, state: TrainState, gen: Generation) -> Offsets:
        """Antithetic pairs of directions with the guided covariance, as explicit offsets."""
        assert isinstance(state, GuidedState)
        sigma = sigma_at(state.step, self.cfg.es)
        g = torch.Generator(device=state.history[-1].device)
        g.manual_seed((self.seed * 1_000_003 + state.step) % 2**63)
        u = subspace(state.history)
        e = sample(self.cfg.es.population // 2, u, self.cfg.guided.alpha, g)
        gen.aux = (e, sigma)
        gen.metrics.update({"sigma": sigma, "subspace_dim": float(u.shape[1])})
        members = torch.stack((e, -e), 1).flatten(0, 1)  # +e_0, -e_0, +e_1, ...
        parts = _split(sigma * members, gen.params)
        return Offsets(gen.params, [d.view(-1, *p.shape) for d, p in zip(parts, gen.params)])

    def tell(self, state: TrainState, gen: Generation) -> list[Tensor]:
        """The antithetic estimate along the sampled directions, as a loss gradient."""
        assert gen.fitness is not None
        e, sigma = gen.aux
        w = self.shaping(gen.fitness).to(e.dtype)
        g = ((w[0::2] - w[1::2]) @ e) / (self.cfg.es.population * sigma)  # uphill in fitness
        return [gp.view_as(p) for p, gp in zip(gen.params, _split(-g, gen.params))]

    def save(self, state: TrainState) -> dict[str, Any]:
        """The gradient history (the noise follows from the step)."""
        assert isinstance(state, GuidedState)
        return {"history": [h.clone() for h in state.history]}

    def load(self, state: TrainState, d: dict[str, Any]) -> None:
        """Restore the gradient history."""
        assert isinstance(state, GuidedState)
        state.history = list(d["history"])


def _split(flat: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    """Split the last axis of ``flat`` into one chunk per parameter."""
    return list(flat.split([p.numel() for p in params], dim=-1))
