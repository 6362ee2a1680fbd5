"""Bring your own model, dataset, loss or metrics to the loop (and so to ``spikeopt.tune``).

``train(cfg, builders=Builders(model=my_model))`` uses ``my_model(cfg, input_shape,
n_outputs)`` instead of the built-in network: for classification ``input_shape`` is one time
step of the encoded input and ``n_outputs`` the number of classes (the readout has
``n_outputs * model.neurons_per_class`` neurons); for control (``trainer.task=control``) it
builds the policy, ``input_shape`` is ``(observation width,)`` as encoded by ``policy.*`` and
``n_outputs`` the number of actions (one readout neuron each). Everything else (methods,
outputs, checkpoints, Tune reporting) is unchanged. A user model must keep the model contract
of DESIGN.md, which :func:`check_output` verifies on a real batch before training starts::

    forward(x (B, T, ...)) -> (spikes_list, membranes_list)
    one (B, T, N) tensor per spiking layer in each list, same shapes, the last the readout.

``data`` and ``loss`` are classification builders; ``metrics`` adds columns to every row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from spikeopt.config import Config
from spikeopt.functional.loss import Loss
from spikeopt.tasks.base import ModelFn, Task, check_model, check_output
from spikeopt.tasks.datasets import Dataset


class Run(Protocol):
    """What a metrics builder is handed: the run being trained (an ``Experiment``)."""

    @property
    def cfg(self) -> Config:
        """The run's resolved config."""
        ...

    @property
    def task(self) -> Task:
        """The task: its data or environment, loss and objective."""
        ...

    @property
    def model(self) -> nn.Module:
        """The network being trained."""
        ...


@dataclass(frozen=True)
class Builders:
    """User builders; ``None`` keeps the built-in one. All must be picklable for Ray."""

    model: ModelFn | None = None
    data: Callable[[Config], Dataset] | None = None
    loss: Callable[[Config], Loss] | None = None
    metrics: Callable[[Run], dict[str, float]] | None = None  # extra columns, every epoch


__all__ = ["Builders", "ModelFn", "Run", "check_model", "check_output"]
