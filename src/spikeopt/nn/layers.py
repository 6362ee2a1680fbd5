"""Spiking layers: thin modules around :mod:`spikeopt.functional.neuron`.

Every layer maps ``(B, T, ...)`` inputs to ``(spikes, membranes)`` with a time axis at dim 1
and keeps no state between calls. The loop over time lives in ``lif_sequence`` only.

Hot path: when the input's time axis has stride 0 (repeat/direct encoding builds it with
``expand``), the input does not change over time, so a layer computes its synaptic current
once, ``(B, N)``, instead of T times -- the largest single speed-up measured here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikeopt.config import InitScheme, NeuronConfig, Norm, Pool
from spikeopt.functional.neuron import (
    LIFParams,
    beta_from_tau,
    li_sequence,
    lif_sequence,
    rlif_sequence,
)
from spikeopt.functional.surrogate import Surrogate, get_surrogate

POOLS: tuple[str, ...] = ("avg", "max", "none")  # ConvLIF.pool_out
NORMS: tuple[str, ...] = ("none", "batch")  # ConvLIF.current
INITS: tuple[str, ...] = ("default", "kaiming", "xavier", "fluct")  # init_weights


def is_static(x: Tensor) -> bool:
    """True when ``x`` (B, T, ...) is the same at every step: its time axis has stride 0."""
    return x.shape[1] == 1 or x.stride(1) == 0


class LIF(nn.Module):
    """LIF neurons (no weights): current (B, T, N) or (B, N) + steps -> spikes, membranes."""

    def __init__(self, n: int, cfg: NeuronConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.spike_fn: Surrogate = get_surrogate(cfg.surrogate, cfg.alpha)
        # Learnable constants are stored per neuron; fixed ones stay Python floats so the
        # fused (graph-free) loop can run.
        self.tau = nn.Parameter(torch.full((n,), cfg.tau_m)) if cfg.learn_tau else None
        self.threshold = (
            nn.Parameter(torch.full((n,), cfg.v_threshold)) if cfg.learn_threshold else None
        )

    def params(self) -> LIFParams:
        """The current LIF constants (tensors where learnable)."""
        c = self.cfg
        tau = self.tau.clamp(min=1e-2) if self.tau is not None else c.tau_m
        return LIFParams(
            beta=beta_from_tau(tau, c.dt),
            v_threshold=self.threshold if self.threshold is not None else c.v_threshold,
            v_reset=c.v_reset,
            v_rest=c.v_rest,
            reset=c.reset,
            detach_reset=c.detach_reset,
        )

    def forward(self, current: Tensor, steps: int | None = None) -> tuple[Tensor, Tensor]:
        """Spikes and membranes (B, T, N)."""
        return lif_sequence(current, self.params(), self.spike_fn, steps)


class LinearLIF(nn.Module):
    """Dense synapses followed by LIF neurons (or a non-spiking leaky integrator, ``li=True``)."""

    def __init__(self, n_in: int, n_out: int, cfg: NeuronConfig, li: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)
        self.li = li
        self.neuron = LIF(n_out, cfg)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, n_in) -> spikes, membranes (B, T, n_out); an LI layer returns (v, v)."""
        steps = x.shape[1]
        current = self.fc(x[:, 0]) if is_static(x) else self.fc(x)  # (B, N) once, or (B, T, N)
        if self.li:
            v = li_sequence(current, self.neuron.params(), steps)
            return v, v
        return self.neuron(current, steps)


class RecurrentLIF(nn.Module):
    """LIF with all-to-all recurrent synapses: ``I[t] = W x[t] + V s[t-1]``."""

    def __init__(self, n_in: int, n_out: int, cfg: NeuronConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)
        self.rec = nn.Linear(n_out, n_out, bias=False)
        nn.init.orthogonal_(self.rec.weight, gain=0.5)  # keeps early recurrent activity modest
        self.neuron = LIF(n_out, cfg)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, n_in) -> spikes, membranes (B, T, n_out)."""
        drive = self.fc(x[:, 0]) if is_static(x) else self.fc(x)
        p = self.neuron.params()
        return rlif_sequence(drive, self.rec.weight, p, self.neuron.spike_fn, x.shape[1])


class ConvLIF(nn.Module):
    """Conv2d (+ batch norm) -> LIF -> pooling, on (B, T, C, H, W) inputs.

    ``hw`` is the input's (H, W). An input of height 1 is a 1-D signal (C, 1, L): kernels
    are (1, k) and pooling (1, 2), so MNIST-1D-like data get a true 1-D convolution.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int,
        cfg: NeuronConfig,
        pool: Pool,
        norm: Norm,
        hw: tuple[int, int],
    ) -> None:
        super().__init__()
        flat = hw[0] == 1
        kernel, pad = ((1, k), (0, k // 2)) if flat else ((k, k), (k // 2, k // 2))
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=pad, bias=norm == "none")
        self.bn = nn.BatchNorm2d(c_out) if norm == "batch" else None
        self.pool = pool
        self.hw = hw  # the input's (H, W): what an export (spikeopt.nir) needs to know
        self.window = (1, 2) if flat else (2, 2)
        self.neuron = LIF(c_out * hw[0] * hw[1], cfg)

    def current(self, x: Tensor) -> Tensor:
        """Synaptic current (N, C, H, W) of a batch of frames (N, C_in, H, W)."""
        c = self.conv(x)
        return self.bn(c) if self.bn is not None else c

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, C, H, W) -> spikes (B, T, C', H, W), membranes (B, T, C'*H*W)."""
        b, steps = x.shape[:2]
        if is_static(x):
            cur = self.current(x[:, 0])
            s, v = self.neuron(cur.flatten(1), steps)
        else:
            cur = self.current(x.flatten(0, 1))
            s, v = self.neuron(cur.view(b, steps, -1))
        return s.view(b, steps, *cur.shape[1:]), v

    def pool_out(self, s: Tensor) -> Tensor:
        """Pool spikes (B, T, C, H, W) spatially for the next layer."""
        if self.pool == "none":
            return s
        if self.pool == "max":  # the op routes a tie's gradient to one input, as BPTT expects
            frames = F.max_pool2d(s.flatten(0, 1), self.window)
            return frames.view(*s.shape[:2], *frames.shape[1:])
        # Average: strided views summed in avg_pool2d's order (so the same values), which ran
        # at ~9 ns per input value here, 2-3x slower.
        w = s[..., : s.shape[-1] // 2 * 2]  # an odd last column is dropped, as the op does
        if self.window == (1, 2):  # 1-D signal: pairs of columns
            parts = [w[..., 0::2], w[..., 1::2]]
        else:
            w = w[..., : s.shape[-2] // 2 * 2, :]
            parts = [w[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]
        total = parts[0] + parts[1]
        for part in parts[2:]:
            total += part
        return total * (1 / len(parts))


def init_weights(
    model: nn.Module, scheme: InitScheme, out_layer: nn.Module, out_scale: float
) -> None:
    """Initialise conv/linear weights by ``scheme`` and scale the output layer's weights."""
    # fluct starts from the default init; the task then fits it to real batches (nn/init.py)
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        if scheme == "kaiming":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif scheme == "xavier":
            nn.init.xavier_uniform_(m.weight)
        if scheme != "default" and m.bias is not None:
            nn.init.zeros_(m.bias)
    if out_scale != 1.0:
        with torch.no_grad():
            for p in out_layer.parameters():
                p.mul_(out_scale)


def set_surrogate(model: nn.Module, fn: Surrogate) -> None:
    """Give every LIF population of ``model`` the surrogate ``fn`` (sharpness schedules)."""
    for m in model.modules():
        if isinstance(m, LIF):
            m.spike_fn = fn


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "INITS",
    "LIF",
    "NORMS",
    "POOLS",
    "ConvLIF",
    "LinearLIF",
    "RecurrentLIF",
    "init_weights",
    "is_static",
    "n_params",
    "set_surrogate",
]
