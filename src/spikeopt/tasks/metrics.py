"""Classification evaluation and activity health: functions that return numbers, never print."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from spikeopt.config import ConfigError
from spikeopt.functional.composite import Composite
from spikeopt.functional.loss import Loss
from spikeopt.tasks.energy import Energy


class Activity:
    """Accumulates per-layer firing rate, dead neurons and membrane mean/variance over batches."""

    def __init__(self) -> None:
        self.count: list[Tensor] = []  # spikes per neuron, summed over samples and time
        self.mem_sum: list[float] = []
        self.mem_sq: list[float] = []
        self.n_mem: list[int] = []
        self.samples = 0
        self.steps = 0

    def add(self, spikes: Sequence[Tensor], mems: Sequence[Tensor]) -> None:
        """Fold one batch of (B, T, N) spikes and membranes into the totals."""
        if not self.count:
            self.count = [torch.zeros(s.shape[-1], dtype=torch.float64) for s in spikes]
            self.mem_sum = [0.0] * len(mems)
            self.mem_sq = [0.0] * len(mems)
            self.n_mem = [0] * len(mems)
        for i, (s, v) in enumerate(zip(spikes, mems)):
            self.count[i] += s.detach().sum((0, 1)).double().cpu()
            v = v.detach()
            self.mem_sum[i] += float(v.sum())
            self.mem_sq[i] += float((v * v).sum())
            self.n_mem[i] += v.numel()
        self.samples += spikes[0].shape[0]
        self.steps = spikes[0].shape[1]

    def summary(self) -> dict[str, float]:
        """``layer{i}_rate``, ``_dead``, ``_dead_frac``, ``_mem_mean``, ``_mem_var`` per layer."""
        out: dict[str, float] = {}
        denom = max(1, self.samples * self.steps)
        for i, c in enumerate(self.count):
            mean = self.mem_sum[i] / max(1, self.n_mem[i])
            dead = int((c == 0).sum())
            out[f"layer{i}_rate"] = float(c.sum()) / (denom * c.numel())
            out[f"layer{i}_dead"] = float(dead)
            out[f"layer{i}_dead_frac"] = dead / c.numel()
            out[f"layer{i}_mem_mean"] = mean
            out[f"layer{i}_mem_var"] = self.mem_sq[i] / max(1, self.n_mem[i]) - mean * mean
        return out


def per_class_recall(pred: Tensor, y: Tensor, n_classes: int) -> dict[str, float]:
    """``recall_{c}``: the fraction of class-c samples predicted as c."""
    out = {}
    for c in range(n_classes):
        mask = y == c
        out[f"recall_{c}"] = float((pred[mask] == c).float().mean()) if mask.any() else float("nan")
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss: Loss,
    x: Tensor,
    y: Tensor,
    encode: Callable[[Tensor, torch.Generator | None], Tensor],
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    n_classes: int = 0,
    recall: bool = False,
    recall_class: int = -1,
) -> dict[str, float]:
    """Loss, accuracy and activity health of ``model`` on (x, y).

    ``acc`` is the loss's readout (with population coding: the class whose neurons score
    highest in total, the population vote); with ``neurons_per_class > 1`` also ``wta_acc``,
    the class of the single highest-scoring output neuron. ``recall_class >= 0`` adds that
    class's ``recall_<c>``; a composite loss adds each term as ``loss_<term>``. The energy
    proxy (:mod:`spikeopt.tasks.energy`: SynOps, dense MACs, sparsity) is counted on the same
    forward passes by hooks on the model's connections.
    """
    if recall_class >= n_classes > 0:
        raise ConfigError(f"metric.recall_class={recall_class}: classes are 0..{n_classes - 1}")
    parts: dict[str, float] = {}
    model.eval()
    k = loss.neurons_per_class
    single = dataclasses.replace(loss, neurons_per_class=1)
    total_loss, preds, wta_preds = 0.0, [], []
    activity, energy = Activity(), Energy(model)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        with energy.watch():
            spikes, mems = model(encode(xb, generator))
        if isinstance(loss, Composite):  # per-component logging
            terms, _ = loss.components(spikes, mems, yb)
            for name, v in terms.items():
                parts[f"loss_{name}"] = parts.get(f"loss_{name}", 0.0) + float(v) * len(yb)
        batch_loss, scores = loss(spikes, mems, yb)
        total_loss += float(batch_loss) * len(yb)
        preds.append(scores.argmax(-1).cpu())
        if k > 1:
            wta_preds.append((single.scores(spikes, mems).argmax(-1) // k).cpu())
        activity.add(spikes, mems)
        energy.add(spikes)
    pred = torch.cat(preds)
    out = {"loss": total_loss / len(x), "acc": float((pred == y).float().mean())}
    if k > 1:
        out["wta_acc"] = float((torch.cat(wta_preds) == y).float().mean())
    out.update({k: v / len(x) for k, v in parts.items()})
    if recall or recall_class >= 0:
        every = per_class_recall(pred, y, n_classes)
        out.update(every if recall else {f"recall_{recall_class}": every[f"recall_{recall_class}"]})
    out.update(activity.summary())
    out.update(energy.summary())
    return out
