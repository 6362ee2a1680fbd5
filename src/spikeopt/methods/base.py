"""The one protocol every training method follows, and the state they share.

A method turns a batch into one parameter update. BPTT computes the surrogate gradient, ES
an estimate from a population; either way the result lands in ``p.grad`` and the same torch
optimizer, clipping and LR schedule apply it (:func:`apply_update`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError, OptimConfig, check_choices
from spikeopt.functional.loss import Loss

Batch = tuple[Tensor, Tensor]  # encoded inputs (B, T, ...), labels (B,)

# optim.name -> the torch optimizer every method's update goes through
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


def forward_loss(model: nn.Module, loss_fn: Loss, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Loss and scores of ``model`` on one batch: the graph ``trainer.compile`` compiles."""
    spikes, mems = model(x)
    return loss_fn(spikes, mems, y)


# forward_loss, or torch.compile(forward_loss): model and loss as one graph, so outputs the
# loss never reads (hidden spikes and membranes) get no zero-filled gradients in backward.
ForwardLoss = Callable[[nn.Module, Loss, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class Finished:
    """What a method's optional ``finish(task)`` hands the loop after the last epoch: summary
    keys, and a different model it made (conversion's SNN) with the config that rebuilds it,
    which the loop writes as a run folder ``folder`` inside the run's (``value``: that
    model's ``test_acc``, what its ``best.pt`` records)."""

    summary: dict[str, float]
    model: nn.Module | None = None
    cfg: Config | None = None
    folder: str = ""
    value: float = float("nan")


@dataclass
class TrainState:
    """What a method updates: the model, its optimizer and the number of updates so far.

    ``forward`` is how BPTT methods run model and loss (compiled with ``trainer.compile``).
    ``optimizer`` is None for a method that moves the parameters itself (CMA-ES).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    step: int = 0
    forward: ForwardLoss = forward_loss


class Method(Protocol):
    """init -> step, step, ...; state_dict/load_state_dict make runs resumable.

    A method may also count its cost: ``passes(step) -> (forward, backward)`` passes over one
    minibatch for update ``step`` (what ``spikeopt compare`` reports).
    """

    name: str
    population: bool  # True: evaluates a population through an Objective (es.* applies)
    tasks: tuple[str, ...]  # the task kinds (trainer.task) it can train
    sections: tuple[str, ...]  # the config sections it reads beyond every run's (spikeopt show)

    def init(self, model: nn.Module, cfg: Config) -> TrainState:
        """Fresh training state for ``model``."""
        ...

    def step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, float]]:
        """One update on ``batch``; returns the new state and scalar metrics (loss, acc, ...)."""
        ...

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors and plain values only)."""
        ...

    def load_state_dict(self, state: TrainState, d: dict[str, Any]) -> TrainState:
        """``state`` (freshly initialised) with the saved values of ``d`` restored."""
        ...


def build_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The configured torch optimizer over ``params``."""
    check_choices(cfg)
    if cfg.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.lr}")
    opt = OPTIMIZERS[cfg.name]
    if opt is torch.optim.SGD:
        return opt(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if len(cfg.betas) != 2:
        raise ConfigError(f"optim.betas needs two values, got {cfg.betas}")
    betas = (cfg.betas[0], cfg.betas[1])
    return opt(params, cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


def backprop(state: TrainState, loss_fn: Loss, batch: Batch) -> dict[str, float]:
    """BPTT on ``batch`` in train mode: ``p.grad`` then holds the surrogate gradient (the
    optimizer's old gradients cleared); returns the batch's ``loss`` and ``acc``."""
    x, y = batch
    state.model.train()
    loss, scores = state.forward(state.model, loss_fn, x, y)
    state.model.zero_grad(set_to_none=True)
    loss.backward()
    return {"loss": float(loss.detach()), "acc": float((scores.argmax(-1) == y).float().mean())}


def surrogate_grads(params: list[nn.Parameter]) -> list[Tensor]:
    """Copies of the gradients :func:`backprop` left, zeros where a parameter got none."""
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def apply_update(state: TrainState, cfg: OptimConfig) -> float:
    """Clip the gradients in ``p.grad`` (value, then norm) and step; returns the pre-clip norm."""
    params = [p for p in state.model.parameters() if p.grad is not None]
    if cfg.clip_value > 0:
        torch.nn.utils.clip_grad_value_(params, cfg.clip_value)
    max_norm = cfg.clip_norm if cfg.clip_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.tensor(0.0)
    assert state.optimizer is not None, "apply_update needs an optimizer"
    state.optimizer.step()
    state.step += 1
    return float(norm)


def base_state_dict(state: TrainState) -> dict[str, Any]:
    """Model, optimizer and step counter: the part of a method's state every method has."""
    opt = state.optimizer
    return {
        "model": state.model.state_dict(),
        "optimizer": opt.state_dict() if opt is not None else None,
        "step": state.step,
    }


def load_base_state(state: TrainState, d: dict[str, Any]) -> TrainState:
    """Restore what :func:`base_state_dict` saved."""
    state.model.load_state_dict(d["model"])
    if state.optimizer is not None:
        state.optimizer.load_state_dict(d["optimizer"])
    state.step = int(d["step"])
    return state
