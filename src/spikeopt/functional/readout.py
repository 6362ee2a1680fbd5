"""Readouts (output layer -> class scores) and losses, for any leading batch axes.

Shapes: output spikes/membranes ``(..., B, T, C * k)`` with ``k = neurons_per_class``;
scores ``(..., B, C)``; a loss is averaged over ``B`` and keeps the leading axes, so the same
function scores one model ``()`` or a population ``(P,)``. :class:`Loss` is the loss a
config names; :func:`spikeopt.functional.loss.make_loss` builds it (or a composite).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _pool(x: Tensor, k: int) -> Tensor:
    """Sum groups of ``k`` neighbouring output neurons: population vote per class."""
    return x if k == 1 else x.unflatten(-1, (-1, k)).sum(-1)


def count_scores(spikes: Tensor, k: int = 1) -> Tensor:
    """Spike counts per class (..., B, C)."""
    return _pool(spikes.sum(-2), k)


def mean_scores(mems: Tensor, k: int = 1) -> Tensor:
    """Mean membrane over time per class."""
    return _pool(mems.mean(-2), k)


def max_scores(mems: Tensor, k: int = 1) -> Tensor:
    """Maximum membrane over time per class."""
    return _pool(mems.amax(-2), k)


def final_scores(mems: Tensor, k: int = 1) -> Tensor:
    """Membrane at the last time step per class."""
    return _pool(mems[..., -1, :], k)


def cross_entropy_samples(scores: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of every sample, scores (..., B, C) against labels (B,) -> (..., B)."""
    logp = F.log_softmax(scores, dim=-1)
    return -logp.gather(-1, y.expand(*scores.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def cross_entropy(scores: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of scores (..., B, C) against labels (B,), averaged over B."""
    return cross_entropy_samples(scores, y).mean(-1)


def ce_count(spikes: Tensor, y: Tensor, k: int = 1) -> Tensor:
    """Cross-entropy on output spike counts (..., B, T, N) -> (...)."""
    return cross_entropy(count_scores(spikes, k), y)


def mse_rate_samples(
    scores: Tensor, y: Tensor, steps: int, on: float = 1.0, off: float = 0.0
) -> Tensor:
    """Squared error of every sample's per-class firing rates (counts / T) against on/off
    targets, averaged over classes: (..., B)."""
    rates = scores / steps
    target = torch.full_like(rates, off)
    target.scatter_(-1, y.expand(*rates.shape[:-1]).unsqueeze(-1), on)
    return (rates - target).pow(2).mean(-1)


def mse_rate(scores: Tensor, y: Tensor, steps: int, on: float = 1.0, off: float = 0.0) -> Tensor:
    """MSE between per-class firing rates (counts / T) and on/off targets."""
    return mse_rate_samples(scores, y, steps, on, off).mean(-1)


def rate_penalty(spikes: Sequence[Tensor], target: float) -> Tensor:
    """Sum over hidden layers of (mean firing rate - target)^2, per leading axis."""
    total = spikes[0].new_zeros(spikes[0].shape[:-3])
    for s in spikes:
        total = total + (s.mean((-3, -2, -1)) - target) ** 2
    return total


# name -> (readout from (spikes, mems), uses spikes?)
_READOUTS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "ce_count": count_scores,
    "mse_count": count_scores,
    "ce_mean": mean_scores,
    "ce_max": max_scores,
    "ce_final": final_scores,
}
LOSSES: tuple[str, ...] = tuple(_READOUTS)


@dataclass(frozen=True)
class Loss:
    """A configured loss: ``(spikes_list, mems_list, y) -> (loss (...,), scores (..., B, C))``."""

    name: str
    neurons_per_class: int = 1
    rate_reg: float = 0.0
    rate_target: float = 0.05
    mse_on: float = 1.0
    mse_off: float = 0.0

    def scores(self, spikes: Sequence[Tensor], mems: Sequence[Tensor]) -> Tensor:
        """Class scores from the output layer."""
        src = spikes[-1] if self.name.endswith("count") else mems[-1]
        return _READOUTS[self.name](src, self.neurons_per_class)

    def __call__(
        self, spikes: Sequence[Tensor], mems: Sequence[Tensor], y: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Loss (averaged over the batch) and the class scores it was computed from."""
        scores = self.scores(spikes, mems)
        if self.name == "mse_count":
            loss = mse_rate(scores, y, spikes[-1].shape[-2], self.mse_on, self.mse_off)
        else:
            loss = cross_entropy(scores, y)
        if self.rate_reg > 0 and len(spikes) > 1:
            loss = loss + self.rate_reg * rate_penalty(spikes[:-1], self.rate_target)
        return loss, scores

    def per_sample(
        self, spikes: Sequence[Tensor], mems: Sequence[Tensor], y: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The loss split as ``samples.mean(-1) + shared``: each sample's own term
        (..., B) and the batch-level rest (...), e.g. the firing-rate penalty -- what per-sample
        credit (node perturbation) needs, since a sample's term depends on that sample only."""
        scores = self.scores(spikes, mems)
        if self.name == "mse_count":
            steps = spikes[-1].shape[-2]
            samples = mse_rate_samples(scores, y, steps, self.mse_on, self.mse_off)
        else:
            samples = cross_entropy_samples(scores, y)
        shared = samples.new_zeros(samples.shape[:-1])
        if self.rate_reg > 0 and len(spikes) > 1:
            shared = shared + self.rate_reg * rate_penalty(spikes[:-1], self.rate_target)
        return samples, shared
