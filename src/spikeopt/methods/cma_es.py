"""CMA-ES through the ``cma`` package (pycma), for small parameter counts such as policies.

One generation: pycma proposes ``P`` parameter vectors, the population is evaluated in one
batched pass as explicit :class:`~spikeopt.population.Offsets` from the current centre,
pycma is told the losses (``-fitness``; NaN/inf count as worse than every finite member),
and the model's parameters become pycma's new mean. CMA-ES adapts its own step size and
covariance, so it has no optimizer: ``optim.*``, ``sched.*`` and ``es.max_update`` do not
apply; the covariance costs ``n^2`` memory, which is why ``es.cma_diagonal=auto`` switches to
the diagonal (separable) variant above :data:`FULL_MAX` parameters. (Hansen & Ostermeier 2001.)

pycma draws from numpy's global generator; the search state (the pycma instance and its own
numpy generator state) lives in the method's :class:`CMAState` and is swapped in and out
around every pycma call, so nothing else in the process perturbs the search. Resuming
replays the saved losses of every past generation into a fresh pycma instance, which
reproduces its state exactly without pickling it into the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from spikeopt.config import Config, ConfigError
from spikeopt.methods.base import TrainState
from spikeopt.methods.strategy import Generation, Strategy
from spikeopt.population import Offsets, perturbed

FULL_MAX = 2000  # above this many parameters `auto` uses the diagonal covariance
CMA_DIAGONAL: tuple[str, ...] = ("auto", "true", "false")  # es.cma_diagonal
T = TypeVar("T")


def _flat(params: list[nn.Parameter]) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in params]).double().cpu().numpy()


@dataclass
class Search:
    """pycma's instance, its own numpy generator state, the start point and the losses told
    so far (one list per generation: what resume replays)."""

    es: Any
    rng: Any
    x0: np.ndarray
    history: list[list[float]] = field(default_factory=list)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` with numpy's global generator holding this search's own state."""
        outside = np.random.get_state()
        np.random.set_state(self.rng)
        try:
            return fn()
        finally:
            self.rng = np.random.get_state()
            np.random.set_state(outside)

    def tell(self, xs: list[np.ndarray], losses: list[float]) -> None:
        """Tell pycma one generation's losses and remember them."""
        self.call(lambda: self.es.tell(xs, losses))
        self.history.append(losses)


@dataclass
class CMAState(TrainState):
    """TrainState plus the CMA search."""

    search: Search | None = None


class CMAES(Strategy):
    """CMA-ES (pycma) on the :class:`~spikeopt.methods.base.Method` protocol."""

    name = "cma"
    state_type = CMAState

    def check(self, cfg: Config) -> None:
        """Covariance choice, population and sigma."""
        e = cfg.es  # es.cma_diagonal is checked with the other es.* choices (Strategy)
        if e.population < 2:
            raise ConfigError(f"es.population must be >= 2, got {e.population}")
        if not e.sigma > 0:
            raise ConfigError(f"es.sigma must be > 0, got {e.sigma}")

    def optimizer(self, model: nn.Module, cfg: Config) -> None:
        """None: pycma moves the centre itself."""
        return None

    def start(self, model: nn.Module, cfg: Config) -> dict[str, Any]:
        """pycma started at the model's parameters."""
        return {"search": self._search(_flat([p for _, p in perturbed(model)]))}

    def _search(self, x0: np.ndarray) -> Search:
        try:
            import cma  # the optional `control` extra
        except ImportError as err:
            raise ConfigError(
                "method.name=cma needs pycma: pip install 'spikeopt[control]'"
            ) from err

        e = self.cfg.es
        seed = self.seed % (2**31 - 1) + 1  # pycma takes a positive 32-bit seed
        diagonal = e.cma_diagonal == "true" or (e.cma_diagonal == "auto" and x0.size > FULL_MAX)
        search = Search(None, np.random.RandomState(seed).get_state(), x0.copy())
        opts = {"popsize": e.population, "seed": seed, "verbose": -9, "CMA_diagonal": diagonal}
        search.es = search.call(lambda: cma.CMAEvolutionStrategy(x0, e.sigma, opts))
        return search

    def ask(self, state: TrainState, gen: Generation) -> Offsets:
        """pycma's proposals as offsets from the current centre."""
        assert isinstance(state, CMAState) and state.search is not None
        xs: list[np.ndarray] = state.search.call(state.search.es.ask)
        deltas = torch.as_tensor(np.stack(xs) - _flat(gen.params))
        offsets, i = [], 0
        for p in gen.params:
            d = deltas[:, i : i + p.numel()]
            offsets.append(d.reshape(len(xs), *p.shape).to(p.device, p.dtype))
            i += p.numel()
        gen.aux = xs
        return Offsets(gen.params, offsets)

    def tell(self, state: TrainState, gen: Generation) -> None:
        """Tell pycma the losses and move the parameters to its new mean."""
        assert isinstance(state, CMAState) and state.search and gen.fitness is not None
        search = state.search
        theta = _flat(gen.params)
        losses = (-gen.fitness).double()
        finite = torch.isfinite(losses)
        worst = float(losses[finite].max()) if finite.any() else 0.0
        losses = torch.where(finite, losses, torch.full_like(losses, abs(worst) * 2 + 1e3))
        search.tell(gen.aux, losses.tolist())
        mean = torch.as_tensor(search.es.mean)
        with torch.no_grad():
            i = 0
            for p in gen.params:
                p.copy_(mean[i : i + p.numel()].view_as(p))
                i += p.numel()
        gen.metrics.update(
            {
                "update_norm": float(np.linalg.norm(search.es.mean - theta)),
                "sigma": float(search.es.sigma),
            }
        )
        return None

    def save(self, state: TrainState) -> dict[str, Any]:
        """The start point and every generation's losses (tensors only)."""
        assert isinstance(state, CMAState) and state.search is not None
        return {
            "cma_x0": torch.as_tensor(state.search.x0),
            "cma_losses": torch.tensor(state.search.history, dtype=torch.float64),
        }

    def load(self, state: TrainState, d: dict[str, Any]) -> None:
        """Replay the saved generations into a fresh pycma."""
        assert isinstance(state, CMAState)
        state.search = search = self._search(d["cma_x0"].numpy())
        for losses in d["cma_losses"].tolist():
            search.tell(search.call(search.es.ask), losses)
