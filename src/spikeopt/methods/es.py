"""Evolution strategies: antithetic NES / OpenAI-ES, evaluated as one batched population.

One step is one generation on one minibatch that every member shares (common random numbers,
including the encoder noise the loop drew once)::

    theta_m = theta + sigma * s_m * eps_k         m = 2k, 2k+1 with s_m = +1, -1
    f_m     = -loss(theta_m; batch)               population.evaluate, chunked and batched
    w       = shaping(f)                          centered ranks by default; NaN/inf rank worst
    g       = 1 / (P sigma) * sum_m w_m s_m eps   population.estimate, noise regenerated
    p.grad  = -g                                  the torch optimizer minimises

and then the same ``apply_update`` as BPTT (clipping, weight decay, Adam/SGD, LR schedules).
``eps`` is low-rank (``A B^T``) for weight matrices unless ``es.mode=full``; the noise of
generation ``t`` is a function of ``(seed, t, member)``, so a resumed run replays it exactly.
(Wierstra et al. 2014, NES; Salimans et al. 2017, OpenAI-ES; low-rank noise as in EGGROLL.)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from spikeopt.config import Config, ConfigError, ESConfig, choose
from spikeopt.functional.loss import Loss
from spikeopt.methods.base import (
    TrainState,
    apply_update,
    base_state_dict,
    build_optimizer,
    load_base_state,
)
from spikeopt.methods.objective import Classification, Objective, cosine
from spikeopt.population import (
    RANDOMNESS,
    Perturbation,
    estimate,
    get_shaping,
    perturbed,
    tie_fraction,
)

SIGMA_SCHEDULES: tuple[str, ...] = ("constant", "exponential", "linear")


def sigma_at(step: int, cfg: ESConfig) -> float:
    """Sigma of generation ``step`` (0-based): constant, exponential or linear to the floor."""
    kind = choose("es.sigma_schedule", cfg.sigma_schedule, SIGMA_SCHEDULES)
    if kind == "constant":
        return cfg.sigma
    if kind == "exponential":
        return max(cfg.sigma_floor, cfg.sigma * cfg.sigma_decay**step)
    frac = min(1.0, step / max(1, cfg.sigma_steps))
    return cfg.sigma + (cfg.sigma_floor - cfg.sigma) * frac


def cap_update(params: list[nn.Parameter], before: list[torch.Tensor], max_norm: float) -> float:
    """Scale the change just applied, ``p - before``, to an L2 norm of at most ``max_norm``
    (0 = no cap); returns the norm of the change that remains. Optimizer state is untouched."""
    with torch.no_grad():
        deltas = [p - b for p, b in zip(params, before)]
        norm = float(torch.linalg.vector_norm(torch.stack([d.norm() for d in deltas])))
        if max_norm > 0 and norm > max_norm:
            for p, b, d in zip(params, before, deltas):
                p.copy_(b + d * (max_norm / norm))
            norm = max_norm
    return norm


def fitness_stats(f: torch.Tensor) -> dict[str, float]:
    """Mean/std/min/max of the finite fitness values, the tie fraction and the non-finite count."""
    finite = f[torch.isfinite(f)]
    nan = math.nan
    return {
        "fit_mean": float(finite.mean()) if finite.numel() else nan,
        "fit_std": float(finite.std()) if finite.numel() > 1 else nan,
        "fit_min": float(finite.min()) if finite.numel() else nan,
        "fit_max": float(finite.max()) if finite.numel() else nan,
        "fit_ties": tie_fraction(f),
        "nonfinite": float(f.numel() - finite.numel()),
    }


class ES:
    """Antithetic ES with fitness shaping; the estimate goes through the shared optimizer.

    Metrics of a step: ``loss``/``acc`` of the centre model on the batch, before the update
    (as BPTT reports them); ``fit_*`` over the population's finite fitness (= -member loss);
    ``fit_ties`` (share of members whose fitness another member has too -- a silent network
    ties them all); ``nonfinite`` (members with NaN/inf loss, ranked worst); ``grad_norm`` of
    the estimate before clipping; ``update_norm`` of the applied change; ``sigma``; and the
    centre's firing rate per hidden layer; every ``es.cosine_every`` generations
    ``cos_surrogate``, the cosine between the ES estimate and the surrogate gradient.

    The task enters only through ``objective`` (default: classification on the batch).
    """

    name = "es"

    def __init__(self, cfg: Config, loss: Loss, objective: Objective | None = None) -> None:
        e = cfg.es
        self.cfg, self.loss = cfg, loss
        self.objective = objective if objective is not None else Classification(loss, e)
        if e.workers != 0:  # shards on Ray actors; only fitness() changes (spikeopt.dist)
            from spikeopt.dist import RayObjective

            self.objective = RayObjective(self.objective, e.workers, e.ray_address, e.worker_cpus)
        if e.cosine_every < 0:
            raise ConfigError(f"es.cosine_every must be >= 0 (0 = off), got {e.cosine_every}")
        self.shaping = get_shaping(e.shaping)
        choose("es.vmap_randomness", e.vmap_randomness, RANDOMNESS)
        choose("es.sigma_schedule", e.sigma_schedule, SIGMA_SCHEDULES)
        if e.sigma_schedule != "constant" and not 0 < e.sigma_floor <= e.sigma:
            raise ConfigError(f"es.sigma_floor must be in (0, es.sigma], got {e.sigma_floor}")
        if e.max_update < 0:
            raise ConfigError(f"es.max_update must be >= 0 (0 = off), got {e.max_update}")
        # Distinct (trainer.seed, es.noise_seed) pairs give distinct noise streams.
        self.seed = cfg.trainer.seed * 2**32 + e.noise_seed
        self.perturbation(0)  # population, sigma, rank and mode fail here, before training

    def perturbation(self, step: int) -> Perturbation:
        """The population of generation ``step``."""
        e = self.cfg.es
        return Perturbation(e.population, sigma_at(step, e), e.rank, e.mode, self.seed, step)

    def init(self, model: nn.Module, cfg: Config) -> TrainState:
        """Optimizer over the model's parameters."""
        return TrainState(model, build_optimizer(list(model.parameters()), cfg.optim))

    def step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, float]]:
        """One generation: evaluate, shape, estimate, apply; centre and population metrics."""
        e, model = self.cfg.es, state.model
        model.train()
        pert = self.perturbation(state.step)
        centre = self.objective.centre(model, batch)  # reported as BPTT reports its batch
        fitness = self.objective.fitness(model, pert, batch)
        params = [p for _, p in perturbed(model)]
        grads = estimate(params, pert, self.shaping(fitness))
        cos = None
        if e.cosine_every and state.step % e.cosine_every == 0:
            g_s = self.objective.gradient(model, batch)
            if g_s is not None:  # the estimate points uphill in fitness = downhill in loss
                cos = cosine(grads, [-g for g in g_s])
        state.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = -g
        before = [p.detach().clone() for p in params]
        grad_norm = apply_update(state, self.cfg.optim)
        update_norm = cap_update(params, before, e.max_update)
        metrics = {
            **centre,
            "grad_norm": grad_norm,
            "update_norm": update_norm,
            "sigma": pert.sigma,
            **fitness_stats(fitness),
        }
        if cos is not None:  # the loop averages each key over the steps that report it
            metrics["cos_surrogate"] = cos
        return state, metrics

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Model, optimizer and step counter: the generation index and sigma follow from it."""
        return base_state_dict(state)

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """Restore a saved state into ``state``."""
        return load_base_state(state, d)
