"""Fitness shaping: raw fitness (P,) -> the weights (P,) of the search-gradient estimate.

Callables inside, names at the edges: configs say ``es.shaping: centered_rank`` and
:func:`get_shaping` returns the function. Non-finite fitness (a diverged member: NaN or inf
loss) always ranks worst -- it must never pull the update toward itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from spikeopt.config import choose

Shaping = Callable[[Tensor], Tensor]


def worst_for_nonfinite(f: Tensor) -> Tensor:
    """``f`` with NaN/inf replaced by the worst finite fitness (0 if none is finite)."""
    finite = torch.isfinite(f)
    floor = f[finite].min() if finite.any() else f.new_zeros(())
    return torch.where(finite, f, floor)


def centered_rank(f: Tensor) -> Tensor:
    """Ranks scaled to [-0.5, 0.5] (OpenAI-ES); ties share their average rank, so tied
    members cancel out of the estimate. Non-finite values rank below every finite one."""
    f = torch.where(torch.isfinite(f), f, torch.full_like(f, -torch.inf))
    _, inverse, counts = torch.unique(f, sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0) - 1  # 0-based rank of the last member of each tie group
    ranks = (last - (counts - 1) / 2)[inverse].to(f.dtype)
    return ranks / max(f.numel() - 1, 1) - 0.5


def nes_utility(f: Tensor) -> Tensor:
    """NES utilities (Wierstra et al. 2014): ``max(0, ln(P/2 + 1) - ln rank)``, normalised,
    minus ``1/P`` -- only the better half pulls. Unlike centered ranks they are not
    symmetric, which is what lets SNES widen its search on a slope."""
    n = f.numel()
    ascending = (centered_rank(f) + 0.5) * max(n - 1, 1)  # 0 = worst, ties averaged
    best_first = n - ascending  # 1 = best
    u = (math.log(n / 2 + 1) - torch.log(best_first)).clamp(min=0)
    return u / u.sum() - 1.0 / n


def zscore(f: Tensor) -> Tensor:
    """``(f - mean) / std`` (zero when all values are equal); non-finite -> worst finite."""
    f = worst_for_nonfinite(f)
    std = f.std()
    return (f - f.mean()) / std if std > 0 else torch.zeros_like(f)


def raw(f: Tensor) -> Tensor:
    """Fitness minus its mean (a baseline: the estimate's expectation is unchanged)."""
    f = worst_for_nonfinite(f)
    return f - f.mean()


SHAPINGS: dict[str, Shaping] = {
    "centered_rank": centered_rank,
    "nes_utility": nes_utility,
    "zscore": zscore,
    "raw": raw,
}


def get_shaping(name: str) -> Shaping:
    """The shaping function called ``name``; the error lists the valid names."""
    return SHAPINGS[choose("es.shaping", name, SHAPINGS)]


def tie_fraction(f: Tensor) -> float:
    """Share of members whose fitness equals another member's: 1 - unique / P."""
    return 1.0 - torch.unique(f).numel() / max(f.numel(), 1)
