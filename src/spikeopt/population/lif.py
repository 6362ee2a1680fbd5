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
from functools import partial

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

# ``out(name, shape)``: a result tensor, possibly reused scratch memory.
Scratch = Callable[[str, tuple[int, ...]], Tensor]


def lif_run(
    current: Tensor,
    p: LIFParams,
    spike_fn: Surrogate,
    steps: int,
    keep_mems: bool = False,
    out: Scratch | None = None,
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
    current = _fold_rest(current, p)
    for i, j in _tiles(c, rows.numel()):
        _loop(current[i:j], p, static, steps, spikes[i:j], None if mems is None else mems[i:j])
    return spikes, mems


def lif_project(
    current: Tensor, p: LIFParams, steps: int, weights: Tensor, out: Scratch | None = None
) -> Tensor:
    """Each step's spikes times each member's ``weights`` (c, N, K), or weights every member
    shares (N, K): (T, c, B, K).

    For a hidden layer whose spikes only feed a dense layer (:func:`lif_feed`): the
    (c, T, B, N) spike tensor -- which falls out of cache and made the ``ge`` writing it ~7x
    slower -- never exists. Shared weights (node perturbation: members differ only in their
    currents) take one matmul over the tile's rows instead of a bmm with a broadcast operand.
    """
    new = out or (lambda _, size: current.new_empty(size))
    rows = current.shape[1:-1] if current.dim() == 3 else current.shape[2:-1]
    projected = new("projected", (steps, current.shape[0], *rows, weights.shape[-1]))

    def feed(i: int, j: int, t: int, fired: Tensor) -> None:
        if weights.dim() == 2:
            torch.mm(fired.flatten(0, -2), weights, out=projected[t, i:j].flatten(0, -2))
        else:
            torch.bmm(fired, weights[i:j], out=projected[t, i:j])

    lif_feed(current, p, steps, feed, out)
    return projected


def lif_feed(
    current: Tensor,
    p: LIFParams,
    steps: int,
    feed: Callable[[int, int, int, Tensor], None],
    out: Scratch | None = None,
) -> None:
    """Run the LIF without storing its spikes: ``feed(i, j, t, fired)`` gets step ``t``'s spikes
    of members ``i..j-1`` (k, B, N) -- one small buffer, overwritten every step, so whatever
    consumes them (the next layer's matmul, pooling) reads them from cache. ``p`` must hold
    float constants."""
    static = current.dim() == 3
    rows = current.shape[1:] if static else current.shape[2:]
    new = out or (lambda _, size: current.new_empty(size))
    current = _fold_rest(current, p)
    for i, j in _tiles(current.shape[0], rows.numel()):
        fired = new("fired", (j - i, *rows))
        _loop(current[i:j], p, static, steps, fired, feed=partial(feed, i, j))


def _fold_rest(current: Tensor, p: LIFParams) -> Tensor:
    """Fold the rest term into the drive once, as the fused loop does."""
    return current + (1 - p.beta) * p.v_rest if p.v_rest != 0 else current


def _tiles(members: int, per_member: int) -> list[tuple[int, int]]:
    """Member ranges of about TILE_ELEMENTS values per step."""
    tile = max(1, TILE_ELEMENTS // max(1, per_member))
    return [(i, min(members, i + tile)) for i in range(0, members, tile)]


def _loop(
    drive: Tensor,
    p: LIFParams,
    static: bool,
    steps: int,
    spikes: Tensor,
    mems: Tensor | None = None,
    feed: Callable[[int, Tensor], None] | None = None,
) -> None:
    """Run the T steps on one tile, writing its spikes (k, T, B, N) and ``mems`` in place.

    With ``feed``, ``spikes`` is one step's buffer (k, B, N), handed to ``feed(t, spikes)``
    and overwritten the next step.
    """
    theta, beta = float(p.v_threshold), float(p.beta)
    v = torch.full_like(drive if static else drive[:, 0], p.v_rest)
    for t in range(steps):
        torch.add(drive if static else drive[:, t], v, alpha=beta, out=v)  # u, in place of v
        fired = spikes if feed is not None else spikes[:, t]
        torch.ge(v, theta, out=fired)
        if p.reset == "subtract":
            v.sub_(fired, alpha=theta)
        else:
            v.masked_fill_(fired.bool(), p.v_reset)
        if mems is not None:
            mems[:, t] = v
        if feed is not None:
            feed(t, fired)


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
