"""LIF dynamics of a population chunk, without autograd: the inner loop of ES evaluation.

The update is :mod:`spikeopt.functional.neuron`'s, written with the same float operations as
its fused loop (``u = drive + beta v``, ``s = u >= theta``, subtract or zero reset), so the
spikes equal the plain model's bit for bit. What differs is only what an evaluation does not
need (measured on the reference network, 1 thread: ~3x fewer ns per neuron-step):

* no autograd buffers: no pre-reset membranes, no separate bool and float spike tensors --
  ``ge`` writes the float spikes in place, the reset reads them back; membranes are kept only
  when the loss reads them;
* the loop over T runs on tiles of members, so one step's working set stays in L2.
  (Measured alternatives that were slower: bool spikes with a uint8 reset, ``torch.where``.)

Layout is member-major, time-major: currents and activity (c, T, B, N); a constant (static)
current is (c, B, N). Learnable (tensor) tau/threshold take the reference ``lif_step``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from spikeopt.functional.neuron import (
    LIFParams,
    LIFState,
    decay_matrix,
    li_step,
    lif_step_loop,
)
from spikeopt.functional.surrogate import Surrogate

# Elements one step of a tile touches per tensor (~256 kB): drive, membrane and spikes stay in
# L2, and the per-op overhead (~5 us x 3 ops x T) stays small beside the arithmetic. Measured
# on the reference network (B*N = 32k per member): 2-member tiles 2.8 ns per neuron-step,
# 1 member 3.0, 8 members 3.2, 32 members 3.7 (1 thread).
TILE_ELEMENTS = 1 << 16


def lif_run(
    current: Tensor,
    p: LIFParams,
    spike_fn: Surrogate,
    steps: int,
    keep_mems: bool = False,
    out: Callable[[str, tuple[int, ...]], Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Spikes (c, T, B, N) and, with ``keep_mems``, post-reset membranes (c, T, B, N).

    ``current`` is (c, T, B, N), or (c, B, N) when it is the same at every step. ``out(name,
    shape)`` may supply the result tensors (reused scratch memory: a fresh 100 MB tensor costs
    a page fault per 4 kB page on first touch, about as much as the LIF arithmetic itself).
    """
    static = current.dim() == 3
    c, rows = current.shape[0], current.shape[1:] if static else current.shape[2:]
    if isinstance(p.beta, Tensor) or isinstance(p.v_threshold, Tensor):
        return lif_step_loop(current, p, spike_fn, steps, static)
    shape = (c, steps, *rows)
    new = out or (lambda _, size: current.new_empty(size))
    spikes = new("spikes", shape)
    mems = new("mems", shape) if keep_mems else None
    if p.v_rest != 0:  # fold the rest term into the drive once, as the fused loop does
        current = current + (1 - p.beta) * p.v_rest
    tile = max(1, TILE_ELEMENTS // max(1, rows.numel()))
    for i in range(0, c, tile):
        j = min(c, i + tile)
        _loop(current[i:j], spikes[i:j], None if mems is None else mems[i:j], p, static)
    return spikes, mems


def _loop(drive: Tensor, spikes: Tensor, mems: Tensor | None, p: LIFParams, static: bool) -> None:
    """Run the T steps on one tile, writing ``spikes`` (k, T, B, N) and ``mems`` in place."""
    theta, beta = float(p.v_threshold), float(p.beta)
    v = torch.full_like(drive if static else drive[:, 0], p.v_rest)
    for t in range(spikes.shape[1]):
        torch.add(drive if static else drive[:, t], v, alpha=beta, out=v)  # u, in place of v
        fired = spikes[:, t]
        torch.ge(v, theta, out=fired)
        if p.reset == "subtract":
            v.sub_(fired, alpha=theta)
        else:
            v.masked_fill_(fired.bool(), p.v_reset)
        if mems is not None:
            mems[:, t] = v


def li_run(current: Tensor, p: LIFParams, steps: int) -> Tensor:
    """Leaky-integrator membranes (c, T, B, N) (``li_sequence``'s maths, time-major).

    A constant (c, B, N) current has the closed form ``v_rest + I (1 - beta^t) / (1 - beta)``;
    a (c, T, B, N) one is one causal-filter matmul per member, (T, T) @ (T, B*N).
    """
    static = current.dim() == 3
    if isinstance(p.beta, Tensor):  # per-member (c, 1, N): the reference step, step by step
        state = LIFState(torch.full_like(current if static else current[:, 0], p.v_rest))
        mems = []
        for t in range(steps):
            v, state = li_step(current if static else current[:, t], state, p)
            mems.append(v)
        return torch.stack(mems, 1)
    beta = torch.as_tensor(p.beta, dtype=current.dtype, device=current.device)
    if static:
        k = torch.arange(1, steps + 1, device=current.device, dtype=current.dtype)
        gain = (1 - beta**k) / (1 - beta)  # (T,): sum_{j<k} beta^j
        return p.v_rest + current.unsqueeze(1) * gain[:, None, None]
    decay = decay_matrix(float(p.beta), steps, current)  # (T, T) causal exponential filter
    return p.v_rest + (decay @ current.flatten(2)).view_as(current)
