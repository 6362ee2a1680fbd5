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

From the command line the model factory is named by ``model.module=package.module:factory``
(:func:`import_factory`; the working directory is searched after ``sys.path``).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torch import nn

from spikeopt.config import Config, ConfigError
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


SPEC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


@contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The working directory searched last while importing (a console script's sys.path
    lacks it, where ``python -c`` has it)."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_factory(spec: str) -> ModelFn:
    """The model factory ``model.module`` names (``package.module:factory``): imports the
    module (its code runs, as any import's does) and returns the callable."""
    if not SPEC.fullmatch(spec):
        raise ConfigError(
            f"model.module={spec!r} is not 'package.module:factory'; e.g. "
            "model.module=mynet:build for build() in ./mynet.py"
        )
    name, attr = spec.split(":")
    with _cwd_on_path():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ConfigError(
                f"model.module={spec}: cannot import {name} ({err}); put {name}.py in the "
                "working directory, on PYTHONPATH, or install its package"
            ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        what = "has no" if factory is None else "has a non-callable"
        raise ConfigError(
            f"model.module={spec}: {name} {what} {attr}; name a function "
            "factory(cfg, input_shape, n_outputs) -> nn.Module"
        )
    return factory  # type: ignore[no-any-return]


def model_builders(cfg: Config, builders: Builders | None) -> Builders:
    """``builders`` with the model ``model.module`` names (refused beside a Python one)."""
    b = builders or Builders()
    if not cfg.model.module:
        return b
    if b.model is not None:
        raise ConfigError(
            f"model.module={cfg.model.module} and a model passed in Python: give one of them"
        )
    return Builders(import_factory(cfg.model.module), b.data, b.loss, b.metrics)


__all__ = ["Builders", "ModelFn", "Run", "check_model", "check_output", "import_factory",
           "model_builders"]  # fmt: skip
