"""Small helpers shared by the tests."""

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from spikeopt.population import Offsets

# A small spiking chemotaxis policy on the tiny preset, in the predecessor's policy settings.
CONTROL_TINY: dict[str, Any] = {
    "trainer.task": "control",
    "method.name": "reinforce",
    "env.name": "chemotaxis",
    "env.preset": "tiny",
    "model.hidden": [32],
    "model.readout": "li",
    "model.init": "kaiming",
    "model.out_scale": 0.01,
    "neuron.surrogate": "sigmoid",
    "neuron.alpha": 1.0,
    "encoder.steps": 5,
    "trainer.device": "cpu",
}


class Crash(Exception):
    """Raised by :func:`crash_after` to interrupt a run as a kill would."""


def crash_after(epoch: int) -> Callable[[dict[str, Any]], None]:
    """A loop callback that raises :class:`Crash` once ``epoch`` is logged (and checkpointed)."""

    def cb(row: dict[str, Any]) -> None:
        if row["epoch"] == epoch:
            raise Crash

    return cb


class Point(nn.Module):
    """A model that is nothing but a parameter vector (for objectives with known optima)."""

    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(start.clone())


class Quadratic:
    """Objective ``f(theta) = -sum(scale * (theta - target)^2)``, evaluated exactly."""

    def __init__(self, target: torch.Tensor, scale: torch.Tensor) -> None:
        self.target, self.scale = target, scale

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        """Fitness of one or many (leading axis) parameter vectors."""
        return -(self.scale * (theta - self.target) ** 2).sum(-1)

    def fitness(self, model: Point, source: Offsets, batch: Any) -> torch.Tensor:
        """Every member's exact fitness."""
        return self.value(model.theta.detach() + source.deltas[0]).double()

    def centre(self, model: Point, batch: Any) -> dict[str, float]:
        """Loss of the centre."""
        return {"loss": float(-self.value(model.theta.detach()))}

    def gradient(self, model: Point, batch: Any) -> None:
        """No surrogate gradient."""
        return None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m spikeopt.cli ARGS`` in a fresh process (its warnings off)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "spikeopt.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
