"""Pure functions of a network's weight matrices: row blocks, sign coherence, the magnitude and
topology penalties (the maths of the hardware constraints, :mod:`spikeopt.nn.hw`, which the
composite loss terms read too).

A weight is read as a matrix ``(out, fan_in)`` (a conv kernel's ``in * kh * kw`` entries
flattened); a **row block** is ``block`` consecutive entries of one row, the last block of a row
shorter when the block does not divide ``fan_in``. ``lead`` leading axes (members) are kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def blocks(w: Tensor, block: int, lead: int = 0) -> Tensor:
    """``w`` as row blocks ``(*lead, out, n_blocks, block)``, zero-padded at each row's end
    (the pad carries no magnitude, so it changes neither coherence nor the losses)."""
    flat = w.flatten(lead + 1)  # (*lead, out, fan_in)
    fan = flat.shape[-1]
    size = block if 0 < block < fan else fan
    pad = (-fan) % size
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    return flat.unflatten(-1, (flat.shape[-1] // size, size))


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` (what the constraints act on)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def effective(module: nn.Module) -> Tensor:
    """The weight a layer runs (its parametrisations applied)."""
    return module.weight  # type: ignore[return-value]


def coherence(w: Tensor, block: int, lead: int = 0) -> Tensor:
    """Magnitude-weighted sign coherence in % (shape ``lead``): over all row blocks,
    ``sum_b max(P_b, N_b) / sum_b (P_b + N_b)`` with ``P_b`` / ``N_b`` the block's positive /
    negative mass; 100 for a zero weight."""
    b = blocks(w, block, lead)
    pos, neg = b.clamp(min=0).sum(-1), (-b).clamp(min=0).sum(-1)
    dims = tuple(range(lead, pos.dim()))
    total = (pos + neg).sum(dims)
    major = torch.maximum(pos, neg).sum(dims)
    return torch.where(total > 0, 100 * major / total.clamp(min=1e-30), 100.0)


def incoherence(w: Tensor, block: int, lead: int = 0) -> Tensor:
    """The fraction of ``w``'s magnitude against its row block's sign, ``1 - coherence/100``:
    ``sum_b min(P_b, N_b) / sum_b |w|`` (shape ``lead``), differentiable."""
    b = blocks(w, block, lead)
    dims = tuple(range(lead, b.dim()))
    total = b.abs().sum(dims)
    minor = (b.abs().sum(-1) - b.sum(-1).abs()) / 2  # min(P, N) = (P + N - |P - N|) / 2
    return minor.sum(dims[:-1]) / total.clamp(min=1e-30)


def magnitude_excess(weights: list[Tensor], limit: float, lead: int = 0) -> Tensor:
    """Mean of ``relu(|w| - limit)^2`` over the entries of ``weights`` (shape ``lead``)."""
    total = sum(torch.relu(w.abs() - limit).pow(2).flatten(lead).sum(-1) for w in weights)
    count = sum(math.prod(w.shape[lead:]) for w in weights)
    return torch.as_tensor(total) / max(count, 1)


def topology(weights: list[Tensor], block: int, lead: int = 0) -> Tensor:
    """Mean over ``weights`` of :func:`incoherence` (shape ``lead``)."""
    return torch.stack([incoherence(w, block, lead) for w in weights]).mean(0)
