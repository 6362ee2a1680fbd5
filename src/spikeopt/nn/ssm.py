"""A diagonal state-space layer in the style of S5 (Smith, Warrington & Linderman, 2023,
"Simplified State Space Layers for Sequence Modeling", ICLR; arXiv:2208.04933).

One layer maps inputs ``u`` (B, T, H) through ``P`` complex diagonal states::

    x_k = lambda_bar * x_{k-1} + B_bar u_k          (complex, elementwise over P)
    y_k = Re(C x_k) + D * u_k

from the continuous-time system ``x' = Lambda x + B u`` discretised by zero-order hold with
a learned step size per state (``log_step``): ``lambda_bar = exp(Lambda dt)`` and
``B_bar = (lambda_bar - 1) / Lambda * B``. ``Lambda`` is kept stable (real part ``-exp(.)``)
and starts at S4D-Lin's ``-1/2 + i pi n`` (the paper's diagonal HiPPO alternative); the
recurrence is linear and time-invariant, so it runs as a log-depth scan
(:func:`diagonal_scan`) instead of T sequential steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def diagonal_scan(a: Tensor, b: Tensor) -> Tensor:
    """``x_k = a * x_{k-1} + b_k`` with ``x_{-1} = 0`` for a constant ``a`` (P,) and
    ``b`` (B, T, P): a Hillis-Steele scan, log2(T) passes (position k then holds
    ``sum_{j<=k} a^(k-j) b_j``)."""
    x, d, power = b, 1, a
    steps = b.shape[1]
    while d < steps:
        shifted = torch.cat([torch.zeros_like(x[:, :d]), x[:, :-d]], 1)
        x = x + power * shifted
        power, d = power * power, 2 * d
    return x


class S5Layer(nn.Module):
    """One diagonal complex state-space layer: (B, T, H) -> (B, T, H), no state between calls."""

    def __init__(self, width: int, states: int, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        n = torch.arange(states, dtype=torch.float32)
        self.log_neg_re = nn.Parameter(torch.full((states,), math.log(0.5)))  # Re = -exp(.)
        self.im = nn.Parameter(math.pi * n)
        # the step sizes log-uniform in [dt_min, dt_max], as in S4/S5: slow and fast states
        u = torch.rand(states)
        self.log_step = nn.Parameter(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))
        scale = 1.0 / math.sqrt(2 * width)
        self.b = nn.Parameter(torch.randn(states, width, 2) * scale)  # real, imaginary parts
        self.c = nn.Parameter(torch.randn(width, states, 2) / math.sqrt(states))
        self.d = nn.Parameter(torch.randn(width))

    def discrete(self) -> tuple[Tensor, Tensor]:
        """Zero-order-hold ``lambda_bar`` (P,) and ``B_bar`` (P, H), complex."""
        lam = torch.complex(-torch.exp(self.log_neg_re), self.im)
        step = torch.exp(self.log_step)
        lam_bar = torch.exp(lam * step)
        b_bar = ((lam_bar - 1) / lam)[:, None] * torch.view_as_complex(self.b)
        return lam_bar, b_bar

    def forward(self, u: Tensor) -> Tensor:
        """u (B, T, H) -> y (B, T, H)."""
        lam_bar, b_bar = self.discrete()
        bu = u.to(b_bar.dtype) @ b_bar.transpose(0, 1)  # (B, T, P)
        x = diagonal_scan(lam_bar, bu)
        return (x @ torch.view_as_complex(self.c).transpose(0, 1)).real + self.d * u


class S5Block(nn.Module):
    """Pre-norm residual block: ``u + GELU(S5(LayerNorm(u)))``."""

    def __init__(self, width: int, states: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ssm = S5Layer(width, states)
        self.mix = nn.Linear(width, width)

    def forward(self, u: Tensor) -> Tensor:
        """u (B, T, H) -> (B, T, H)."""
        return u + self.mix(F.gelu(self.ssm(self.norm(u))))


__all__ = ["S5Block", "S5Layer", "diagonal_scan"]
