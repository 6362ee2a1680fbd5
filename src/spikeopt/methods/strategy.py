"""The base of every population method, so that each method file reads as its estimator.

One generation, whatever the method (the ask/tell template of evosax)::

    centre(state, gen)        the unperturbed model on the batch: loss/acc as BPTT reports them
    ask(state, gen)           the population: seeds (Perturbation), offsets, node noise
    evaluate(state, gen)      objective.fitness of every member on the same batch (batched)
    tell(state, gen)          the method's estimate of d loss / d theta (None: it moved theta)
    apply                     p.grad = estimate; the shared optimizer step (clipping, schedules);
                              the applied change capped to es.max_update

:class:`Strategy` owns what every such method needs and none should write again: the
objective (sharded over Ray actors when ``es.workers > 0``), fitness shaping and statistics,
the update cap, the noise seed, the ES-vs-surrogate cosine and the resume state. A method
subclass writes only what differs -- usually ``ask`` and ``tell``, and the fields its own
state adds (:meth:`start`, :meth:`save`, :meth:`load`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError, ESConfig, check_choices
from spikeopt.functional.loss import Loss
from spikeopt.methods.base import (
    TrainState,
    apply_update,
    base_state_dict,
    build_optimizer,
    load_base_state,
)
from spikeopt.population import get_shaping, perturbed, tie_fraction
from spikeopt.tasks.base import Objective
from spikeopt.tasks.classification import ClassificationObjective

SIGMA_SCHEDULES: tuple[str, ...] = ("constant", "exponential", "linear")


def noise_seed(cfg: Config) -> int:
    """The seed of a run's perturbation noise: distinct (trainer.seed, es.noise_seed) pairs
    give distinct streams."""
    return cfg.trainer.seed * 2**32 + cfg.es.noise_seed


def sigma_at(step: int, cfg: ESConfig) -> float:
    """Sigma of generation ``step`` (0-based): constant, exponential or linear to the floor."""
    if cfg.sigma_schedule == "constant":
        return cfg.sigma
    if cfg.sigma_schedule == "exponential":
        return max(cfg.sigma_floor, cfg.sigma * cfg.sigma_decay**step)
    frac = min(1.0, step / max(1, cfg.sigma_steps))
    return cfg.sigma + (cfg.sigma_floor - cfg.sigma) * frac


def check_sigma(cfg: ESConfig) -> None:
    """es.sigma and its schedule: ConfigError naming the key when unusable."""
    if not cfg.sigma > 0:
        raise ConfigError(f"es.sigma must be > 0, got {cfg.sigma}")
    if cfg.sigma_schedule != "constant" and not 0 < cfg.sigma_floor <= cfg.sigma:
        raise ConfigError(f"es.sigma_floor must be in (0, es.sigma], got {cfg.sigma_floor}")


def cap_update(params: list[nn.Parameter], before: list[Tensor], max_norm: float) -> float:
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


def cosine(a: list[Tensor], b: list[Tensor]) -> float:
    """Cosine similarity of two parameter-shaped tensor lists, as flat vectors."""
    dot = sum(float((x * y).sum()) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x.pow(2).sum()) for x in a))
    nb = math.sqrt(sum(float(y.pow(2).sum()) for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else math.nan


def fitness_stats(f: Tensor) -> dict[str, float]:
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


@contextmanager
def forked_rng(device: torch.device) -> Iterator[None]:
    """Run a block without advancing the global RNG that the next BPTT step draws from."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@dataclass
class Generation:
    """What one generation passes from hook to hook."""

    batch: Any
    params: list[nn.Parameter]
    metrics: dict[str, float] = field(default_factory=dict)
    source: Any = None  # what ask() returned: Perturbation, Offsets, node noise, ...
    fitness: Tensor | None = None  # (P,) float64, higher is better
    surrogate: list[Tensor] | None = None  # the BPTT gradient, when the method computed it
    estimate: list[Tensor] | None = None  # the zeroth-order loss gradient (for the cosine)
    rng: Tensor | None = None  # the global RNG state the BPTT pass started from
    aux: Any = None  # what a method's ask() keeps for its tell() (e.g. the unit noise)


class Strategy:
    """A population method on the :class:`~spikeopt.methods.base.Method` protocol.

    Metrics of a step: the centre's ``loss``/``acc`` on the batch before the update (as BPTT
    reports them) and its hidden firing rates; ``fit_*`` over the population's finite fitness
    (``fit_ties``: the share of members whose fitness another member has too -- a silent
    network ties them all; ``nonfinite``: members with NaN/inf loss, ranked worst);
    ``grad_norm`` of the estimate before clipping, ``update_norm`` of the applied change;
    every ``es.cosine_every`` steps (every step for methods that run BPTT anyway)
    ``cos_surrogate``, the cosine of the zeroth-order estimate with the surrogate gradient.
    """

    name = "strategy"
    population = True
    tasks: tuple[str, ...] = ("classification", "control")
    sections: tuple[str, ...] = ("es",)
    state_type: type[TrainState] = TrainState
    cosine_key = "cos_surrogate"

    def __init__(self, cfg: Config, loss: Loss | None, objective: Objective | None = None) -> None:
        e = cfg.es
        check_choices(e)  # every es.* choice of every population method, before anything is built
        self.cfg, self.loss = cfg, loss
        self.objective: Objective = (
            objective if objective is not None else ClassificationObjective(loss, e)  # type: ignore[arg-type]
        )
        if e.cosine_every < 0:
            raise ConfigError(f"es.cosine_every must be >= 0 (0 = off), got {e.cosine_every}")
        if e.max_update < 0:
            raise ConfigError(f"es.max_update must be >= 0 (0 = off), got {e.max_update}")
        self.shaping = get_shaping(e.shaping)
        self.seed = noise_seed(cfg)
        self.check(cfg)
        if e.ray_address and e.workers == 0:  # else the cluster named would go unused, unsaid
            raise ConfigError(
                f"es.ray_address={e.ray_address} is used only to shard the population over Ray "
                "actors; set es.workers=N (N >= 1) or drop es.ray_address"
            )
        if e.workers != 0:  # shards on Ray actors; only fitness() changes (spikeopt.dist)
            from spikeopt.dist import RayObjective

            self.objective = RayObjective(self.objective, e.workers, e.ray_address, e.worker_cpus)

    # -- what a method writes ----------------------------------------------------------------

    def check(self, cfg: Config) -> None:
        """Raise ConfigError for settings this method cannot use (before anything runs)."""

    def start(self, model: nn.Module, cfg: Config) -> dict[str, Any]:
        """The fields this method's state adds to :class:`TrainState`, freshly initialised."""
        return {}

    def ask(self, state: TrainState, gen: Generation) -> Any:
        """The population of this generation."""
        raise NotImplementedError

    def tell(self, state: TrainState, gen: Generation) -> list[Tensor] | None:
        """The loss-gradient estimate from ``gen.fitness`` (None: the method set theta)."""
        raise NotImplementedError

    def save(self, state: TrainState) -> dict[str, Any]:
        """The method's own resume state (tensors and plain values)."""
        return {}

    def load(self, state: TrainState, d: dict[str, Any]) -> None:
        """Restore what :meth:`save` wrote into a freshly initialised ``state``."""

    # -- hooks with a default ------------------------------------------------------------------

    def optimizer(self, model: nn.Module, cfg: Config) -> torch.optim.Optimizer | None:
        """The torch optimizer that applies the estimate (None: the method moves theta)."""
        return build_optimizer(list(model.parameters()), cfg.optim)

    def centre(self, state: TrainState, gen: Generation) -> None:
        """The centre's metrics on the batch (updates batch-norm statistics)."""
        gen.metrics.update(self.objective.centre(state.model, gen.batch))

    def evaluate(self, state: TrainState, gen: Generation) -> Tensor:
        """Fitness (P,) of every member of ``gen.source`` on the batch."""
        with self.replayed(gen):
            return self.objective.fitness(state.model, gen.source, gen.batch)

    @contextmanager
    def replayed(self, gen: Generation) -> Iterator[None]:
        """When ``centre`` recorded the RNG state its pass started from (``gen.rng``), run the
        block on a forked RNG from that state: the members draw the centre pass's dropout
        masks, and the next BPTT draw is not shifted by them."""
        if gen.rng is None:
            yield
            return
        with forked_rng(gen.batch[0].device):
            torch.set_rng_state(gen.rng)
            yield

    # -- the generation ------------------------------------------------------------------------

    def init(self, model: nn.Module, cfg: Config) -> TrainState:
        """The optimizer and this method's own state for ``model``."""
        return self.state_type(model, self.optimizer(model, cfg), **self.start(model, cfg))  # type: ignore[arg-type]

    def step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, float]]:
        """One generation: centre, ask, evaluate, tell, apply (see the module docstring)."""
        state.model.train()
        gen = Generation(batch, [p for _, p in perturbed(state.model)])
        self.centre(state, gen)
        gen.source = self.ask(state, gen)
        gen.fitness = self.evaluate(state, gen)
        grads = self.tell(state, gen)
        self._cosine(state, gen, grads)
        if grads is None:  # the method has moved the centre itself (CMA-ES)
            state.step += 1
        else:
            gen.metrics.update(self._apply(state, gen.params, grads))
        return state, {**gen.metrics, **fitness_stats(gen.fitness)}

    def _cosine(self, state: TrainState, gen: Generation, grads: list[Tensor] | None) -> None:
        """``cos_surrogate`` when BPTT ran anyway or every ``es.cosine_every`` steps."""
        estimate = gen.estimate if gen.estimate is not None else grads
        every = self.cfg.es.cosine_every
        due = every > 0 and state.step % every == 0
        if estimate is None or (gen.surrogate is None and not due):
            return
        g_s = gen.surrogate
        if g_s is None:
            g_s = self.objective.gradient(state.model, gen.batch)
        if g_s is not None:  # a task without a differentiable loss has none
            gen.metrics[self.cosine_key] = cosine(estimate, g_s)

    def _apply(
        self, state: TrainState, params: list[nn.Parameter], grads: list[Tensor]
    ) -> dict[str, float]:
        """``p.grad = estimate``, the shared optimizer step, the cap on the applied change."""
        for p, g in zip(params, grads):
            p.grad = g
        before = [p.detach().clone() for p in params]
        grad_norm = apply_update(state, self.cfg.optim)
        return {
            "grad_norm": grad_norm,
            "update_norm": cap_update(params, before, self.cfg.es.max_update),
        }

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Model, optimizer, step counter and the method's own state (the generation's noise
        follows from the step)."""
        return {**base_state_dict(state), **self.save(state)}

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """Restore a saved state into ``state``."""
        load_base_state(state, d)
        self.load(state, d)
        return state
