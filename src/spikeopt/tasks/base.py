"""What differs between classification and control, behind the one protocol the loop runs.

A :class:`Task` owns its data (a dataset, or an environment), the network it is solved with
(built-in or a user's, checked against the model contract below), what a population method
scores (its :class:`Objective`) and how an epoch's method steps become ``metrics.csv`` rows.
The loop (:mod:`spikeopt.train.loop`) writes everything else once: method steps, resume,
logging, checkpoints, schedules, early stopping. One epoch::

    for batch in task.batches(epoch):                 # lazy: control rolls out the current policy
        state, metrics = method.step(state, batch.data)
        steps.append((batch.info, metrics))
    rows = task.evaluate(epoch, steps, head)          # classification 1 row, control 1 per episode
    ...
    task.summary(rows)                                # the task's summary.json keys (DESIGN.md)

The model contract (DESIGN.md) every task relies on, verified on a real batch for user models
(:func:`check_model`)::

    forward(x (B, T, ...)) -> (spikes_list, membranes_list)
    one (B, T, N) tensor per spiking layer in each list, same shapes, the last the readout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError
from spikeopt.functional.loss import Loss
from spikeopt.population import Source

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Row = dict[str, Any]  # one metrics.csv row
Step = tuple[Any, dict[str, float]]  # (Batch.info, the method's metrics on that batch)
# A user model builder: (cfg, one time step's input shape, classes or actions) -> model.
ModelFn = Callable[[Config, tuple[int, ...], int], nn.Module]


class Batch(NamedTuple):
    """One method step's input, and what the task's rows need to remember about it."""

    data: Any  # what Method.step receives: (x, y), a list of episodes, episode seeds
    info: Any = None  # e.g. the outcomes of the episodes a REINFORCE batch was rolled out from


class Objective(Protocol):
    """What a population method scores: member fitness and the centre's metrics on a batch."""

    def fitness(self, model: nn.Module, source: Source, batch: Any) -> Tensor:
        """Fitness (P,) float64 of every member of ``source`` on ``batch``; higher is better."""
        ...

    def centre(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Metrics of the unperturbed model on ``batch``; includes ``loss``."""
        ...

    def gradient(self, model: nn.Module, batch: Any) -> list[Tensor] | None:
        """The surrogate gradient of the loss on ``batch`` (per parameter), or None if the
        task has no differentiable loss."""
        ...

    def chunk_for(self, model: nn.Module, source: Any, batch: Any) -> int:
        """Members per pass of the in-process evaluation, or 0 when how members are grouped
        cannot change their fitness (what shards must align to)."""
        ...

    def chunked(self, chunk: int) -> Objective:
        """A copy that evaluates in chunks of exactly ``chunk`` members (one Ray shard's)."""
        ...


class Task(Protocol):
    """A kind of problem (``trainer.task``) on the protocol the loop is written against."""

    kind: str  # classification | control
    metric: str  # the headline row column (what `spikeopt tune` optimises unless told)
    epochs: int  # loop iterations: trainer.epochs, or control updates
    steps: int  # method steps per epoch
    key: str  # the row column that numbers rows: the TensorBoard step, resume's purge point
    shown: tuple[str, ...]  # row columns the progress bar and the per-epoch line show

    @property
    def model(self) -> nn.Module:
        """The network the method trains (``TrainState.model`` is this module)."""
        ...

    @property
    def loss(self) -> Loss | None:
        """What gradient methods differentiate; None when the task has no such loss."""
        ...

    @property
    def objective(self) -> Objective:
        """What population methods score."""
        ...

    def example(self, n: int) -> Tensor:
        """``n`` inputs (n, T, ...) as the model sees them (model checks, memory estimates)."""
        ...

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The method steps of ``epoch``, produced lazily (one is consumed before the next)."""
        ...

    def evaluate(self, epoch: int, steps: list[Step], head: Row) -> list[Row]:
        """The rows of ``epoch`` from its steps; ``head`` holds the loop's columns (step, lr,
        alpha) for the task to place."""
        ...

    def summary(self, rows: list[Row]) -> Row:
        """The task's summary.json keys from every row of the run."""
        ...

    def curves(self, rows: list[Row], summary: Row, title: str) -> Figure:
        """The run's curves.png."""
        ...


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
            f"{n_out} (classes x model.neurons_per_class, or actions)"
        )


def loss_gradient(model: nn.Module, loss: Loss, batch: tuple[Tensor, Tensor]) -> list[Tensor]:
    """BPTT surrogate gradient of ``loss`` on ``batch`` w.r.t. the trainable parameters (model
    left in its mode, ``.grad`` untouched; zeros for unused parameters)."""
    x, y = batch
    params = [p for p in model.parameters() if p.requires_grad]
    spikes, mems = model(x)
    value, _ = loss(spikes, mems, y)
    return list(torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True))


def call_factory(model_fn: ModelFn, cfg: Config, shape: tuple[int, ...], n_out: int) -> nn.Module:
    """A user model from its factory; what the factory raises or returns wrong is a
    ConfigError naming the factory and how it is called."""
    name = getattr(model_fn, "__qualname__", type(model_fn).__name__)
    call = f"{name}(cfg, input_shape={shape}, n_outputs={n_out})"
    try:
        model = model_fn(cfg, shape, n_out)
    except Exception as err:  # the user's code: say where it failed, as a bad setting
        raise ConfigError(
            f"the model factory raised {type(err).__name__}: {err} -- called as {call}; "
            "it must return an nn.Module (docs/own-model.md)"
        ) from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{call} returned a {type(model).__name__}, not an nn.Module")
    return model


def check_model(model: nn.Module, x: Tensor, n_out: int | None = None) -> None:
    """Run ``model`` on the encoded batch ``x`` (B, T, ...) without gradients and check it."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            check_output(model(x), x.shape[0], x.shape[1], n_out)
    finally:
        model.train(was)
