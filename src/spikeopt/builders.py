"""Bring your own model, dataset, loss or metrics to the loop (and so to ``spikeopt.tune``).

``train(cfg, builders=Builders(model=my_model))`` uses ``my_model(cfg, input_shape,
n_classes)`` instead of :func:`spikeopt.nn.build_model`; everything else (methods, outputs,
checkpoints, Tune reporting) is unchanged. A user model must keep the model contract of
DESIGN.md, which :func:`check_output` verifies on a real batch before training starts::

    forward(x (B, T, ...)) -> (spikes_list, membranes_list)
    one (B, T, N) tensor per spiking layer in each list, same shapes, the last the readout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError
from spikeopt.functional.loss import Loss
from spikeopt.tasks.datasets import Dataset

if TYPE_CHECKING:
    from spikeopt.train.loop import Experiment


@dataclass(frozen=True)
class Builders:
    """User builders; ``None`` keeps the built-in one. All must be picklable for Ray."""

    model: Callable[[Config, tuple[int, ...], int], nn.Module] | None = None
    data: Callable[[Config], Dataset] | None = None
    loss: Callable[[Config], Loss] | None = None
    metrics: Callable[[Experiment], dict[str, float]] | None = None  # extra columns per epoch


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def check_output(output: Any, batch: int, steps: int, n_out: int | None = None) -> None:
    """Raise ConfigError naming what breaks ``(spikes_list, membranes_list)``, each (B, T, N)."""
    head = "model output contract: forward(x) must return (spikes_list, membranes_list)"
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        raise ConfigError(f"{head}; got {_describe(output)}")
    spikes, mems = output
    for name, layers in (("spikes_list", spikes), ("membranes_list", mems)):
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ConfigError(f"{head}; {name} is {_describe(layers)}, not a non-empty list")
    if len(spikes) != len(mems):
        raise ConfigError(f"{head}; {len(spikes)} spike tensors but {len(mems)} membrane tensors")
    for i, (s, v) in enumerate(zip(spikes, mems)):
        for name, t in (("spikes", s), ("membranes", v)):
            if not isinstance(t, Tensor):
                raise ConfigError(f"{head}; layer {i} {name} is {_describe(t)}, not a tensor")
            if t.dim() != 3 or t.shape[:2] != (batch, steps):
                raise ConfigError(
                    f"{head}; layer {i} {name} has shape {tuple(t.shape)}, expected "
                    f"(B={batch}, T={steps}, N) -- batch first, then time"
                )
        if s.shape != v.shape:
            raise ConfigError(
                f"{head}; layer {i} spikes {tuple(s.shape)} and membranes {tuple(v.shape)} differ"
            )
    if n_out is not None and spikes[-1].shape[-1] != n_out:
        raise ConfigError(
            f"{head}; the last (readout) layer has {spikes[-1].shape[-1]} neurons, expected "
            f"{n_out} (classes x model.neurons_per_class)"
        )


def check_model(model: nn.Module, x: Tensor, n_out: int | None = None) -> None:
    """Run ``model`` on the encoded batch ``x`` (B, T, ...) without gradients and check it."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            check_output(model(x), x.shape[0], x.shape[1], n_out)
    finally:
        model.train(was)
