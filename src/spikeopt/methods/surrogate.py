"""Surrogate-gradient BPTT: back-propagate the loss through time, with the surrogate
derivative standing in for the spike's (zero almost everywhere) derivative."""

from __future__ import annotations

from typing import Any

from torch import nn

from spikeopt.config import Config
from spikeopt.functional.loss import Loss
from spikeopt.methods.base import (
    Batch,
    TrainState,
    apply_update,
    backprop,
    base_state_dict,
    build_optimizer,
    load_base_state,
)


class Surrogate:
    """BPTT with surrogate spike derivatives; any torch optimizer, clipping, LR schedule."""

    name = "surrogate"
    population = False  # runs a population through an Objective
    tasks: tuple[str, ...] = ("classification", "language")  # the task kinds it can train
    sections: tuple[str, ...] = ()

    def __init__(self, cfg: Config, loss: Loss) -> None:
        self.cfg = cfg
        self.loss = loss

    def init(self, model: nn.Module, cfg: Config) -> TrainState:
        """Optimizer over the model's parameters."""
        return TrainState(model, build_optimizer(list(model.parameters()), cfg.optim))

    def step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, float]]:
        """Forward, backward through time, clipped optimizer step."""
        metrics = backprop(state, self.loss, batch)
        return state, {**metrics, "grad_norm": apply_update(state, self.cfg.optim)}

    def passes(self, step: int) -> tuple[int, int]:
        """One forward and one backward pass."""
        return 1, 1

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Model, optimizer and step counter."""
        return base_state_dict(state)

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """Restore a saved state into ``state``."""
        return load_base_state(state, d)
