"""Energy proxy: synaptic operations, dense MACs and activation sparsity, per layer and sample.

The definitions are NeuroBench's (Yik et al., "The NeuroBench framework for benchmarking
neuromorphic computing algorithms and systems", Nature Communications 16, 1545, 2025; the
``neurobench`` package 2.x: ``metrics/workload/synaptic_operations.py``,
``metrics/utils/layers/macs.py`` and ``input.py``, ``metrics/workload/activation_sparsity*.py``).
A *connection* is an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (NeuroBench's ``STATELESS_LAYERS``);
one *frame* is what it maps in one call for one sample and step (a vector, or ``(C, *space)``).
For a frame ``x`` into a connection with weights ``W``::

    ops(x)    = sum_j sum_i [W_ji != 0] [x_i != 0] = sum_i [x_i != 0] * fanout_i
    fanout    = bin(W)^T 1        # nonzero weights input i reaches: out_features (Linear);
                                  # C_out x the kernel taps that land on an output (conv:
                                  # ~ C_out k^2 / stride^2 away from the zero padding)
    dense(x)  = sum_i fanout_i with every weight and input set to 1    (NeuroBench "Dense")

The bias is not an operation. A frame whose values all lie in {-1, 0, 1} is spiking and its
ops are accumulates (``synops_ac``, NeuroBench "Effective_ACs"); any other frame (an analog
first-layer input, average-pooled spikes) gives multiply-accumulates (``synops_mac``,
"Effective_MACs"). Sums run over every frame of the evaluation and are divided by its
samples: ``synops_per_sample`` and ``dense_macs_per_sample`` count all T time steps, and
``dense_macs_per_step`` = ``dense_macs_per_sample / T`` is what one pass of an ANN of the same
shape does per sample. ``sparsity/layer{i}`` = zero outputs / all outputs of spiking layer i
(the model's ``spikes_list``) over samples and steps; ``activation_sparsity`` pools every layer.

Two cases the hooks see differently from the time steps they stand for: a connection that ran
once per sample while the model returned T steps had a constant input held for T steps (the
static-input fast path of :mod:`spikeopt.nn.layers`), so it counts T times, as NeuroBench's
step-by-step wrappers count it; and :class:`~spikeopt.nn.layers.RecurrentLIF` passes its
recurrent weight to the fused loop instead of calling ``rec``, so ``rec`` is counted from the
layer's own spikes: ``s[t]`` reaches the neurons at ``t + 1`` (T frames, the last spikes
reach nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from spikeopt.nn.layers import RecurrentLIF

Connection = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d
CONNECTIONS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # NeuroBench's STATELESS_LAYERS
ENERGY_PREFIXES = ("synops", "dense_macs", "sparsity/", "activation_sparsity")


def frame_dims(layer: Connection) -> int:
    """Trailing dimensions of one frame: 1 for Linear, channels + space for a conv."""
    return 1 if isinstance(layer, nn.Linear) else len(layer.kernel_size) + 1


def fan_out(layer: Connection, frame: tuple[int, ...], dense: bool = False) -> Tensor:
    """``bin(W)^T 1`` (float64, shape ``frame``): the operations one nonzero input causes;
    ``dense`` sets every weight to 1 first."""
    w = layer.weight.detach()
    w = torch.ones_like(w) if dense else (w != 0).to(w.dtype)
    if isinstance(layer, nn.Linear):
        return w.sum(0).double()
    # a conv's fan-out depends on the position (padding, stride): the gradient of the summed
    # output of the binary, bias-free conv with respect to its input is exactly bin(W)^T 1
    x = torch.zeros((1, *frame), dtype=w.dtype, device=w.device, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(layer._conv_forward(x, w, None).sum(), x)
    return g[0].double()


CHUNK = 1 << 22  # values per float32 sum in `spike_count`: sums of 0/1 values stay exact


def spike_count(x: Tensor) -> float | None:
    """The number of nonzero values of ``x`` when every value is -1, 0 or 1, else None
    (NeuroBench's ``binary_inputs`` test: a spiking input, whose ops are accumulates).

    The range first (one fused pass ends most analog inputs), then, for ``a = |x|`` in
    [0, 1], ``sum a (1 - a) == 0``: every term is >= 0, so the float sum is 0 exactly when
    each ``a`` is 0 or 1 (no cancellation, no tolerance); in chunks of 2^22 values, whose
    float32 sums of 0/1 values are exact.
    """
    lo, hi = (float(v) for v in torch.aminmax(x))
    if lo < -1 or hi > 1:
        return None
    a = x.flatten().float()
    parts = (a.abs() if lo < 0 else a).split(CHUNK)
    if any(float(torch.dot(p, 1 - p)) != 0 for p in parts):
        return None
    return sum(float(p.sum()) for p in parts)


def indicator(frames: Tensor) -> tuple[Tensor, bool]:
    """``[x != 0]`` of ``frames`` (N, *frame) as floats, and whether they are spikes
    (:func:`spike_count`); spikes are their own indicator (up to sign), nothing is written."""
    x = frames if frames.dtype in (torch.float32, torch.float64) else frames.float()
    if spike_count(x) is None:
        return (x != 0).to(x.dtype), False
    return (x.abs() if bool((x < 0).any()) else x), True


def synaptic_ops(nonzero: Tensor, fanout: Tensor) -> Tensor:
    """``sum over frames of sum_i [x_i != 0] fanout_i`` (float64) for the indicator ``nonzero``
    (N, *fanout.shape) of the frames; one matrix-vector product, exact in float32 per frame
    below 2^24 operations, as NeuroBench's own binary layer computes it."""
    f = fanout.flatten().to(nonzero.dtype)
    return torch.mv(nonzero.flatten(1), f).sum(dtype=torch.float64)


def sparsity(nonzero: float, total: float) -> float:
    """Fraction of zero activations (NeuroBench ``ActivationSparsity``); 0 when empty."""
    return (total - nonzero) / total if total else 0.0


@dataclasses.dataclass
class _Count:
    """One connection's running totals (tensors on the model's device)."""

    fanout: Tensor
    dense: float  # ops of one frame with every weight and input set to 1
    ac: Tensor
    mac: Tensor
    frames: int = 0


class Energy:
    """Counts a model's synaptic operations and output sparsity while :meth:`watch` is open."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.counts: dict[str, _Count] = {}
        self.nonzero: list[float] = []
        self.numel: list[int] = []
        self.samples = 0
        self.steps = 0

    @contextmanager
    def watch(self) -> Iterator[Energy]:
        """Hooks on every connection of the model for the block; removed after it.

        A compiled model (``trainer.compile``) runs the block eagerly: hooks inside its graph
        would break it into pieces and recompile them; its training steps stay compiled.
        """
        recurrent = {m.rec for m in self.model.modules() if isinstance(m, RecurrentLIF)}
        handles = []
        for name, m in self.model.named_modules():
            if isinstance(m, RecurrentLIF):
                handles.append(m.register_forward_hook(self._recurrent_hook(f"{name}.rec")))
            elif isinstance(m, CONNECTIONS) and m not in recurrent:
                handles.append(m.register_forward_pre_hook(self._connection_hook(name)))
        compiled = getattr(self.model, "_compiled_call_impl", None) is not None
        try:
            with torch.compiler.set_stance("force_eager") if compiled else nullcontext():
                yield self
        finally:
            for h in handles:
                h.remove()

    def _count(self, name: str, layer: Connection, frames: Tensor) -> None:
        c = self.counts.get(name)
        if c is None:
            frame = tuple(frames.shape[1:])
            zero = torch.zeros((), dtype=torch.float64, device=frames.device)
            dense = float(fan_out(layer, frame, dense=True).sum())
            c = self.counts[name] = _Count(fan_out(layer, frame), dense, zero, zero.clone())
        nonzero, spiking = indicator(frames)
        ops = synaptic_ops(nonzero, c.fanout)
        if spiking:
            c.ac += ops
        else:
            c.mac += ops
        c.frames += frames.shape[0]

    def _connection_hook(self, name: str) -> Any:
        def hook(layer: Connection, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            self._count(name, layer, x.reshape(-1, *x.shape[x.dim() - frame_dims(layer) :]))

        return hook

    def _recurrent_hook(self, name: str) -> Any:
        def hook(layer: RecurrentLIF, args: tuple[Any, ...], out: tuple[Tensor, Tensor]) -> None:
            s = out[0].detach()  # (B, T, N): s[t] drives step t + 1; nothing precedes t = 0
            frames = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], 1).flatten(0, 1)
            self._count(name, layer.rec, frames)

        return hook

    def add(self, spikes: Sequence[Tensor]) -> None:
        """Fold one batch's outputs (B, T, N) per layer into the sparsity totals."""
        if not self.nonzero:
            self.nonzero = [0.0] * len(spikes)
            self.numel = [0] * len(spikes)
        for i, s in enumerate(spikes):
            s = s.detach()
            count = spike_count(s)  # fused sums for spikes; an analog readout is counted
            self.nonzero[i] += float(torch.count_nonzero(s)) if count is None else count
            self.numel[i] += s.numel()
        self.samples += spikes[0].shape[0]
        self.steps = spikes[-1].shape[1]

    def summary(self) -> dict[str, float]:
        """The energy keys (module docstring), per sample, over every batch seen."""
        n, steps = max(1, self.samples), max(1, self.steps)
        out: dict[str, float] = {}
        total = {"ac": 0.0, "mac": 0.0, "dense": 0.0}
        layers: dict[str, float] = {}
        for name, c in self.counts.items():
            held = steps if c.frames == self.samples else 1  # the static fast path (docstring)
            ac, mac = float(c.ac) * held / n, float(c.mac) * held / n
            dense = c.dense * c.frames * held / n
            layers[f"synops/{name}"] = ac + mac
            layers[f"dense_macs/{name}"] = dense
            total["ac"] += ac
            total["mac"] += mac
            total["dense"] += dense
        out["synops_per_sample"] = total["ac"] + total["mac"]
        out["synops_ac_per_sample"] = total["ac"]
        out["synops_mac_per_sample"] = total["mac"]
        out["dense_macs_per_sample"] = total["dense"]
        out["dense_macs_per_step"] = total["dense"] / steps
        out.update(layers)
        for i, (z, m) in enumerate(zip(self.nonzero, self.numel)):
            out[f"sparsity/layer{i}"] = sparsity(z, m)
        out["activation_sparsity"] = sparsity(sum(self.nonzero), sum(self.numel))
        return out


def energy_keys(row: dict[str, Any]) -> dict[str, Any]:
    """The energy entries of a metrics row (what ``summary.json`` carries of them)."""
    return {k: v for k, v in row.items() if k.startswith(ENERGY_PREFIXES)}


__all__ = [
    "CONNECTIONS",
    "ENERGY_PREFIXES",
    "Energy",
    "energy_keys",
    "fan_out",
    "frame_dims",
    "indicator",
    "sparsity",
    "spike_count",
    "synaptic_ops",
]
