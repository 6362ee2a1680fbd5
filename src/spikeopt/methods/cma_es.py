"""CMA-ES through the ``cma`` package (pycma), for small parameter counts such as policies.

One generation: pycma proposes ``P`` parameter vectors, the population is evaluated in one
batched pass as explicit :class:`~spikeopt.population.Offsets` from the current centre,
pycma is told the losses (``-fitness``; NaN/inf count as worse than every finite member),
and the model's parameters become pycma's new mean. CMA-ES adapts its own step size and
covariance, so ``optim.*`` and ``es.max_update`` do not apply; the covariance costs
``n^2`` memory, which is why ``es.cma_diagonal=auto`` switches to the diagonal
(separable) variant above :data:`FULL_MAX` parameters. (Hansen & Ostermeier 2001.)

pycma draws from numpy's global generator; this method swaps its own generator state in and
out around every pycma call, so nothing else in the process perturbs the search. Resuming
replays the saved losses of every past generation into a fresh pycma instance, which
reproduces its state exactly without pickling it into the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from spikeopt.config import Config, ConfigError, choose
from spikeopt.functional.loss import Loss
from spikeopt.methods.base import TrainState, base_state_dict, build_optimizer, load_base_state
from spikeopt.methods.es import fitness_stats
from spikeopt.methods.objective import Classification, Objective
from spikeopt.population import Offsets, perturbed

FULL_MAX = 2000  # above this many parameters `auto` uses the diagonal covariance
T = TypeVar("T")


def _flat(params: list[nn.Parameter]) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in params]).double().cpu().numpy()


class CMAES:
    """CMA-ES (pycma) on the :class:`~spikeopt.methods.base.Method` protocol."""

    name = "cma"

    def __init__(self, cfg: Config, loss: Loss, objective: Objective | None = None) -> None:
        e = cfg.es
        self.cfg = cfg
        self.objective = objective if objective is not None else Classification(loss, e)
        choose("es.cma_diagonal", e.cma_diagonal, ("auto", "true", "false"))
        if e.population < 2:
            raise ConfigError(f"es.population must be >= 2, got {e.population}")
        if not e.sigma > 0:
            raise ConfigError(f"es.sigma must be > 0, got {e.sigma}")
        self.seed = (cfg.trainer.seed * 1_000_003 + e.noise_seed) % 2**31 + 1
        self._es: Any = None
        self._rng: Any = None
        self._x0: np.ndarray | None = None
        self._history: list[list[float]] = []  # losses told, one list per generation

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """numpy's global generator holds this method's state inside the block only."""
        outside = np.random.get_state()
        np.random.set_state(self._rng)
        try:
            yield
        finally:
            self._rng = np.random.get_state()
            np.random.set_state(outside)

    def _call(self, fn: Callable[[], T]) -> T:
        with self._own_rng():
            return fn()

    def _start(self, x0: np.ndarray) -> None:
        try:
            import cma  # the optional `control` extra
        except ImportError as err:
            raise ConfigError(
                "method.name=cma needs pycma: pip install 'spikeopt[control]'"
            ) from err

        e = self.cfg.es
        diagonal = e.cma_diagonal == "true" or (e.cma_diagonal == "auto" and x0.size > FULL_MAX)
        self._x0, self._history = x0.copy(), []
        self._rng = np.random.RandomState(self.seed).get_state()
        opts = {"popsize": e.population, "seed": self.seed, "verbose": -9, "CMA_diagonal": diagonal}
        self._es = self._call(lambda: cma.CMAEvolutionStrategy(x0, e.sigma, opts))

    def init(self, model: nn.Module, cfg: Config) -> TrainState:
        """pycma started at the model's parameters; the optimizer is kept for the loop's
        bookkeeping (LR column) but never steps."""
        self._start(_flat([p for _, p in perturbed(model)]))
        return TrainState(model, build_optimizer(list(model.parameters()), cfg.optim))

    def _tell(self, xs: list[np.ndarray], losses: list[float]) -> None:
        self._call(lambda: self._es.tell(xs, losses))
        self._history.append(losses)

    def step(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, float]]:
        """One generation: ask, evaluate the population in one pass, tell, move the centre."""
        model = state.model
        model.train()
        params = [p for _, p in perturbed(model)]
        theta = _flat(params)
        xs: list[np.ndarray] = self._call(self._es.ask)
        deltas = torch.as_tensor(np.stack(xs) - theta)
        offsets, i = [], 0
        for p in params:
            d = deltas[:, i : i + p.numel()]
            offsets.append(d.reshape(len(xs), *p.shape).to(p.device, p.dtype))
            i += p.numel()
        centre = self.objective.centre(model, batch)
        fitness = self.objective.fitness(model, Offsets(params, offsets), batch)
        losses = (-fitness).double()
        finite = torch.isfinite(losses)
        worst = float(losses[finite].max()) if finite.any() else 0.0
        losses = torch.where(finite, losses, torch.full_like(losses, abs(worst) * 2 + 1e3))
        self._tell(xs, losses.tolist())
        mean = torch.as_tensor(self._es.mean)
        with torch.no_grad():
            i = 0
            for p in params:
                p.copy_(mean[i : i + p.numel()].view_as(p))
                i += p.numel()
        state.optimizer.step()  # no gradients: a no-op that keeps LR schedulers in order
        state.step += 1
        return state, {
            **centre,
            "update_norm": float(np.linalg.norm(self._es.mean - theta)),
            "sigma": float(self._es.sigma),
            **fitness_stats(fitness),
        }

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Model, step, the start point and every generation's losses (tensors only)."""
        assert self._x0 is not None
        return {
            **base_state_dict(state),
            "cma_x0": torch.as_tensor(self._x0),
            "cma_losses": torch.tensor(self._history, dtype=torch.float64),
        }

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """Replay the saved generations into a fresh pycma, then restore the model."""
        self._start(d["cma_x0"].numpy())
        for losses in d["cma_losses"].tolist():
            xs = self._call(self._es.ask)
            self._tell(xs, losses)
        return load_base_state(state, d)
