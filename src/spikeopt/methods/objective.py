"""What population methods maximise: an :class:`Objective` scores a whole population at once.

ES, SNES and CMA-ES only ever ask two questions of a task -- "how fit is each member of this
population on this batch?" and "how is the unperturbed centre doing?" -- so one protocol lets
the same strategies train classifiers (fitness = -loss on a shared minibatch) and control
policies (fitness = episodic return of a batched rollout).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from spikeopt.config import ESConfig
from spikeopt.functional.loss import Loss
from spikeopt.population import Source, evaluate, evaluate_samples


class Objective(Protocol):
    """Population fitness and centre metrics for one task."""

    def fitness(self, model: nn.Module, source: Source, batch: Any) -> Tensor:
        """Fitness (P,) float64 of every member of ``source`` on ``batch``; higher is better."""
        ...

    def centre(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Metrics of the unperturbed model on ``batch``; includes ``loss``."""
        ...

    def gradient(self, model: nn.Module, batch: Any) -> list[Tensor] | None:
        """The surrogate gradient of the loss on ``batch`` (per parameter), or None if the
        task has none; used for the ES-vs-surrogate cosine diagnostic."""
        ...


class Classification:
    """Fitness = -loss on one minibatch that every member shares (common random numbers)."""

    def __init__(self, loss: Loss, cfg: ESConfig) -> None:
        self.loss, self.cfg = loss, cfg

    def fitness(self, model: nn.Module, source: Source, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Chunked, batched population evaluation (:func:`spikeopt.population.evaluate`)."""
        c = self.cfg
        return evaluate(model, source, batch, self.loss, c.chunk, c.memory_mb, c.vmap_randomness)

    def sample_losses(
        self, model: nn.Module, source: Source, batch: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Every member's loss per sample (P, B) and its batch-level rest (P,) (per-sample
        credit: :func:`spikeopt.population.evaluate_samples`)."""
        c = self.cfg
        return evaluate_samples(model, source, batch, self.loss, c.chunk, c.memory_mb)

    def centre(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        """Loss, accuracy and hidden firing rates of the centre (updates batch-norm stats)."""
        x, y = batch
        with torch.no_grad():
            spikes, mems = model(x)
            loss, scores = self.loss(spikes, mems, y)
        out = {"loss": float(loss), "acc": float((scores.argmax(-1) == y).float().mean())}
        for i, s in enumerate(spikes[:-1]):
            out[f"layer{i}_rate"] = float(s.mean())
        return out

    def gradient(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> list[Tensor]:
        """BPTT surrogate gradient of the loss (model left in its mode, grads untouched)."""
        x, y = batch
        params = [p for p in model.parameters() if p.requires_grad]
        spikes, mems = model(x)
        loss, _ = self.loss(spikes, mems, y)
        return list(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True))


def cosine(a: list[Tensor], b: list[Tensor]) -> float:
    """Cosine similarity of two parameter-shaped tensor lists, as flat vectors."""
    dot = sum(float((x * y).sum()) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x.pow(2).sum()) for x in a))
    nb = math.sqrt(sum(float(y.pow(2).sum()) for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else math.nan
