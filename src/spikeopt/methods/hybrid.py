"""The 0+1 hybrid: the surrogate gradient, corrected by ES where the surrogate is blind.

One step on one minibatch (every member and the BPTT pass share it and its encoder noise)::

    g_s    = dL_surrogate/dtheta                  BPTT, exactly as the surrogate method
    g_es   = antithetic NES estimate of dL/dtheta  population.evaluate: hard spikes, no surrogate
    g_orth = g_es - (<g_es, g_s> / |g_s|^2) g_s    the part of g_es the surrogate cannot see
    lam_eff = lam                                  or, with hybrid.normalize,
    lam_eff = lam |g_s| / |g_orth|                 the correction is a fixed fraction of the step
    p.grad = g_s + lam_eff g_orth                  then apply_update, as every method

The correction is orthogonal to g_s, so it never cancels or rescales the surrogate step; with
a raw lam the noisy estimate can dwarf g_s (a predecessor measured |g_orth| ~ 41 against
|g_s| ~ 8.6), which ``normalize`` prevents by construction. ``lam = 0`` is the surrogate method
bit for bit: the population runs on a forked RNG, so it cannot shift the next dropout draw.
(The hybrid of a method-first SNN toolkit; Maheswaranathan et al. 2019 for the motivation.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError, choose
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
from spikeopt.methods.es import ES, fitness_stats
from spikeopt.methods.objective import Classification, Objective, cosine
from spikeopt.population import SHAPINGS, estimate, get_shaping, perturbed


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return sum(float((x * y).sum()) for x, y in zip(a, b))


def _norm(a: list[Tensor]) -> float:
    return math.sqrt(_dot(a, a))


def project_out(g: list[Tensor], d: list[Tensor]) -> list[Tensor]:
    """``g`` minus its component along ``d`` (``g`` itself when ``d`` is zero)."""
    dd = _dot(d, d)
    c = _dot(g, d) / dd if dd > 0 else 0.0
    return [x - c * y for x, y in zip(g, d)]


def combine(
    g_s: list[Tensor], g_es: list[Tensor], lam: float, normalize: bool
) -> tuple[list[Tensor], dict[str, float]]:
    """``g_s + lam_eff * g_orth`` and its diagnostics (norms, lam_eff, correction fraction,
    cosine of g_s and g_es). ``lam = 0`` returns ``g_s`` itself, untouched."""
    g_orth = project_out(g_es, g_s)
    ns, no = _norm(g_s), _norm(g_orth)
    lam_eff = lam * ns / no if normalize and no > 0 else lam
    stats = {
        "g_s_norm": ns,
        "g_orth_norm": no,
        "lambda_eff": lam_eff,
        # share of the combined step's norm that is correction (the parts are orthogonal)
        "corr_frac": lam_eff * no / math.hypot(ns, lam_eff * no) if ns or lam_eff * no else 0.0,
        "cos_es": cosine(g_s, g_es),
    }
    if lam == 0:
        return g_s, stats
    return [s + lam_eff * o for s, o in zip(g_s, g_orth)], stats


@contextmanager
def forked_rng(device: torch.device) -> Iterator[None]:
    """Run a block without advancing the global RNG that the next BPTT step draws from."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


class Hybrid:
    """Surrogate gradient plus a weighted ES correction orthogonal to it (see module doc).

    Metrics of a step: ``loss``/``acc`` of the BPTT forward (as the surrogate method reports
    them), ``grad_norm`` of the combined gradient before clipping, ``g_s_norm``,
    ``g_orth_norm``, ``lambda_eff``, ``corr_frac`` (share of the step's norm that is
    correction), ``cos_es`` (cosine of g_s and the ES estimate of the true-loss gradient),
    ``sigma`` and the population's ``fit_*`` statistics.
    """

    name = "hybrid"

    def __init__(self, cfg: Config, loss: Loss, objective: Objective | None = None) -> None:
        h = cfg.hybrid
        if not math.isfinite(h.lam) or h.lam < 0:
            raise ConfigError(f"hybrid.lam must be a finite number >= 0, got {h.lam}")
        self.cfg, self.loss = cfg, loss
        self.shaping = get_shaping(choose("hybrid.shaping", h.shaping, SHAPINGS))
        self.objective = objective if objective is not None else Classification(loss, cfg.es)
        self.es = ES(cfg, loss, self.objective)  # its population, sigma schedule and checks

    def init(self, model: nn.Module, cfg: Config) -> TrainState:
        """Optimizer over the model's parameters."""
        return TrainState(model, build_optimizer(list(model.parameters()), cfg.optim))

    def step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, float]]:
        """BPTT, population, projection, one optimizer step through ``apply_update``."""
        x, model = batch[0], state.model
        rng = torch.get_rng_state()
        metrics = backprop(state, self.loss, batch)
        params = [p for _, p in perturbed(model)]
        g_s = surrogate_grads(params)
        pert = self.es.perturbation(state.step)
        with forked_rng(x.device):
            torch.set_rng_state(rng)  # population draws (dropout) start where BPTT's did
            fitness = self.objective.fitness(model, pert, batch)
        # the estimate points uphill in fitness = -loss; negate for a loss gradient like g_s
        g_es = [-g for g in estimate(params, pert, self.shaping(fitness))]
        grads, stats = combine(g_s, g_es, self.cfg.hybrid.lam, self.cfg.hybrid.normalize)
        if self.cfg.hybrid.lam > 0:  # lam = 0 keeps BPTT's own p.grad: the surrogate method
            for p, g in zip(params, grads):
                p.grad = g
        metrics["grad_norm"] = apply_update(state, self.cfg.optim)
        return state, {**metrics, **stats, "sigma": pert.sigma, **fitness_stats(fitness)}

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Model, optimizer and step counter: the generation's noise follows from the step."""
        return base_state_dict(state)

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """Restore a saved state into ``state``."""
        return load_base_state(state, d)
