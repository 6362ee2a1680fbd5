"""Training methods, one file each, all on the :class:`Method` protocol."""

from __future__ import annotations

from collections.abc import Callable

from spikeopt.config import Config, choose
from spikeopt.functional.loss import Loss
from spikeopt.methods.base import Batch, Method, TrainState, apply_update, build_optimizer
from spikeopt.methods.cma_es import CMAES
from spikeopt.methods.es import ES
from spikeopt.methods.guided_es import GuidedES
from spikeopt.methods.hybrid import Hybrid
from spikeopt.methods.reinforce import REINFORCE
from spikeopt.methods.snes import SNES
from spikeopt.methods.surrogate import Surrogate

# name -> constructor(cfg, loss); extended by one line per method file.
METHODS: dict[str, Callable[[Config, Loss], Method]] = {
    "surrogate": Surrogate,
    "es": ES,
    "reinforce": REINFORCE,
    "snes": SNES,
    "cma": CMAES,
    "hybrid": Hybrid,
    "guided-es": GuidedES,
}


def make_method(cfg: Config, loss: Loss) -> Method:
    """The method ``cfg.method.name`` names; the error lists the valid names."""
    return METHODS[choose("method.name", cfg.method.name, METHODS)](cfg, loss)


__all__ = [
    "METHODS",
    "Batch",
    "Method",
    "TrainState",
    "apply_update",
    "build_optimizer",
    "make_method",
]
