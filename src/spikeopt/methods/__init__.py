"""Training methods, one file each, all on the :class:`Method` protocol."""

from __future__ import annotations

from typing import Any

from spikeopt.config import Config, check_choices
from spikeopt.functional.loss import Loss
from spikeopt.methods.base import Batch, Method, TrainState, apply_update, build_optimizer
from spikeopt.methods.cma_es import CMAES
from spikeopt.methods.conversion import Conversion
from spikeopt.methods.es import ES
from spikeopt.methods.guided_es import GuidedES
from spikeopt.methods.hybrid import Hybrid
from spikeopt.methods.nodepert import NodePert
from spikeopt.methods.reinforce import REINFORCE
from spikeopt.methods.snes import SNES
from spikeopt.methods.surrogate import Surrogate

# name -> method class; extended by one line per method file.
METHODS: dict[str, type[Any]] = {
    "surrogate": Surrogate,
    "es": ES,
    "nodepert": NodePert,
    "reinforce": REINFORCE,
    "snes": SNES,
    "cma": CMAES,
    "hybrid": Hybrid,
    "guided-es": GuidedES,
    "conversion": Conversion,
}


def make_method(cfg: Config, loss: Loss | None, objective: Any = None) -> Method:
    """The method ``cfg.method.name`` names, for a task's ``loss`` and (population methods)
    its ``objective``; the error lists the valid names."""
    check_choices(cfg.method)
    cls: Any = METHODS[cfg.method.name]
    return cls(cfg, loss, objective) if cls.population else cls(cfg, loss)


__all__ = [
    "METHODS",
    "Batch",
    "Method",
    "TrainState",
    "apply_update",
    "build_optimizer",
    "make_method",
]
