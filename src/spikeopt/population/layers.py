"""The hot path: a chunk of ``c`` perturbed members of a built-in :class:`SNN`, batched.

Shapes: the shared input ``x`` is (B, T, ...); every member-specific tensor carries a leading
member axis and is time-major inside it: activity (c, T, B, N), currents (c, M, N) with rows
``M = B`` (static input) or ``T*B``. :func:`snn_forward` hands the loss (c, B, T, N) views.

Where the time goes, and what keeps it down:

* A layer fed the shared input computes ``x W^T`` once per *generation* (cached across chunks);
  each member adds only its low-rank term ``sigma (x B_i) A_i^T`` -- one (M, D) @ (D, c*r)
  matmul for the whole chunk. With a stride-0 (static) input both are computed for one step,
  not T, and the LIF loop runs on a (c, B, N) constant current.
* A layer fed member-specific spikes reads them once: ``[W^T | B_i]`` is one (D, N + r)
  matrix per member, so ``x W^T`` and ``x B_i`` come out of a single bmm.
* Full-rank members materialise ``W + sigma E_i`` for the chunk and run one bmm (or one
  grouped convolution).
* LIF dynamics run through :func:`spikeopt.population.lif.lif_run`: the fused loop's float
  operations without its autograd buffers, tiled so each step stays in L2.
* Convolutions: on the shared input, low-rank is an r-channel conv with the kernels ``B_i``
  then a 1x1 mix by ``A_i``; member-specific inputs take one grouped conv (one group per
  member) with each member's materialised kernels.
* A hidden layer's spikes are stored only when the caller keeps them: a dense layer feeding a
  dense layer hands each step's spikes straight to the next layer's matmul
  (:func:`project_layer`), a conv layer hands them to its pooling
  (:func:`spikeopt.population.conv.pooled_conv_layer`),
  while they are still in cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikeopt.functional.neuron import LIFState, lif_step
from spikeopt.nn.layers import ConvLIF, LinearLIF, RecurrentLIF
from spikeopt.nn.models import SNN
from spikeopt.population.context import (
    Context,
    constant_lif,
    neuron_layer,
    neuron_params,
    time_rows,
)
from spikeopt.population.conv import conv_layer, pooled_conv_layer
from spikeopt.population.lif import lif_project

MATMUL_COLUMNS = 16  # project_layer pads its synapse matrix to a multiple of this


def supports(model: nn.Module) -> bool:
    """True when ``model`` is a plain :class:`SNN` made of built-in layers only."""
    return type(model) is SNN and all(type(m) in _LAYERS for m in model.layers)


def member_matmul(h: Tensor, w: Tensor, ctx: Context) -> Tensor:
    """Member-specific rows ``h`` (c, M, D) times each member's ``W_i^T`` -> (c, M, N)."""
    e, sigma = ctx.noise[w], ctx.noise.sigma
    if e is None:
        return h @ w.T
    if isinstance(e, Tensor):
        return torch.bmm(h, ctx.noise.weights(w).transpose(1, 2))
    a, b = e
    n = w.shape[0]
    out = torch.bmm(h, torch.cat((w.T.expand(h.shape[0], *w.T.shape), b), 2))  # (c, M, N + r)
    return torch.baddbmm(out[..., :n], out[..., n:], a.transpose(1, 2), alpha=sigma)


def linear_current(fc: nn.Linear, h: Tensor, shared: bool, ctx: Context) -> Tensor:
    """Current (c, M, N) of rows ``h``: shared (M, D) or member-specific (c, M, D)."""
    bias = None if fc.bias is None else ctx.noise.weights(fc.bias).unsqueeze(1)  # (c, 1, N)
    rows = ctx.noise.rows(fc.weight) if shared else None
    if rows is not None:
        return _shared_rows_current(fc, h, rows, ctx, bias)
    pair = ctx.noise.pair(fc.weight) if shared else None
    if pair is not None:
        return _shared_pair_current(fc, h, pair, ctx, bias)
    e = ctx.noise[fc.weight]
    if shared and not isinstance(e, Tensor):
        return _shared_lowrank_current(fc, h, ctx, bias)
    if shared:
        cur = h @ ctx.noise.weights(fc.weight).transpose(1, 2)
    else:
        cur = member_matmul(h, fc.weight, ctx)
    return cur if bias is None else cur + bias


def _shared_base(fc: nn.Linear, h: Tensor, ctx: Context) -> Tensor:
    """``x W^T`` (M, N) of the shared input: the same for every member of the generation, so
    computed by the first chunk and cached for the rest."""
    key = ("linear", id(fc))
    if key not in ctx.shared:
        ctx.shared[key] = h @ fc.weight.T
    return ctx.shared[key]


def _shared_pair_current(
    fc: nn.Linear, h: Tensor, pair: Tensor, ctx: Context, bias: Tensor | None
) -> Tensor:
    """Full-rank members in antithetic pairs on the shared input: ``x W^T`` (cached) plus
    ``+-sigma x E_k^T``, so each pair's product is computed once and no member's weight
    matrix is ever formed."""
    k, (n, d) = pair.shape[0], fc.weight.shape
    base = _shared_base(fc, h, ctx)  # (M, N)
    z = (h @ pair.view(k * n, d).T).view(-1, k, n).transpose(0, 1)  # (K, M, N), one GEMM
    cur = h.new_empty(2 * k, *base.shape)
    torch.add(base, z, alpha=ctx.noise.sigma, out=cur[0::2])
    torch.sub(base, z, alpha=ctx.noise.sigma, out=cur[1::2])
    return cur if bias is None else cur.add_(bias)


def _shared_rows_current(
    fc: nn.Linear, h: Tensor, rows: tuple[Tensor, tuple[int, ...]], ctx: Context,
    bias: Tensor | None,
) -> Tensor:  # fmt: skip
    """Table members in antithetic pairs on the shared input, pair ``k``'s noise being table
    rows ``first_k .. first_k + N``: ``x T^T`` over every row once per generation (cached),
    and each member ``x W^T +- sigma`` its pair's slice of it -- no per-pair product."""
    table, first = rows
    n, sigma = fc.weight.shape[0], ctx.noise.sigma
    base = _shared_base(fc, h, ctx)  # (M, N)
    key = ("table", id(fc))
    if key not in ctx.shared:
        ctx.shared[key] = h @ table.T  # (M, R)
    full = ctx.shared[key]
    cur = h.new_empty(2 * len(first), *base.shape)
    for k, r in enumerate(first):
        z = full[:, r : r + n]  # a view: pair k's x E_k^T
        torch.add(base, z, alpha=sigma, out=cur[2 * k])
        torch.sub(base, z, alpha=sigma, out=cur[2 * k + 1])
    return cur if bias is None else cur.add_(bias)


def _shared_lowrank_current(fc: nn.Linear, h: Tensor, ctx: Context, bias: Tensor | None) -> Tensor:
    """``x W^T`` (cached for the generation) + each bias + ``sigma (x B_i) A_i^T`` in place."""
    c, sigma, e = ctx.noise.size, ctx.noise.sigma, ctx.noise[fc.weight]
    base = _shared_base(fc, h, ctx)
    cur = base.expand(c, *base.shape).clone() if bias is None else base + bias
    if isinstance(e, tuple):
        a, b = e  # x @ [B_1 .. B_c] in one matmul: (M, D) @ (D, c*r)
        z = (h @ b.permute(1, 0, 2).flatten(1)).view(h.shape[0], c, -1).transpose(0, 1)
        cur.baddbmm_(z, a.transpose(1, 2), alpha=sigma)
    return cur


def linear_layer(
    layer: LinearLIF, h: Tensor, shared: bool, ctx: Context, keep_mems: bool
) -> tuple[Tensor, Tensor | None]:
    """LinearLIF on (B, T, D) shared or (c, T, B, D) member inputs -> (c, T, B, N) twice."""
    cur, steps = input_current(layer, h, shared, ctx)
    return neuron_layer(layer.neuron, cur, steps, ctx, layer.li, keep_mems)


def input_current(layer: LinearLIF, h: Tensor, shared: bool, ctx: Context) -> tuple[Tensor, int]:
    """A LinearLIF's current (c, B, N) (static) or (c, T, B, N), and T."""
    x, _, steps = time_rows(h, shared)
    lead = x.shape[:-1] if shared else x.shape[1:-1]  # (B,) | (T, B)
    flat = x.reshape(-1, x.shape[-1]) if shared else x.reshape(x.shape[0], -1, x.shape[-1])
    return linear_current(layer.fc, flat, shared, ctx).reshape(ctx.noise.size, *lead, -1), steps


def can_project(layer: nn.Module, nxt: nn.Module) -> bool:
    """True when a hidden ``layer``'s spikes can go straight into ``nxt``'s current step by step
    (:func:`project_layer`): dense LIF into dense, with constant (not learnable) tau/threshold."""
    return (
        type(layer) is LinearLIF and type(nxt) is LinearLIF and not layer.li and constant_lif(layer)
    )


def project_layer(
    layer: LinearLIF, cur: Tensor, steps: int, nxt: nn.Linear, ctx: Context
) -> tuple[Tensor, Tensor]:
    """A hidden layer's mean rate (c, 1, 1, 1) and the current (c, T, B, N') it drives in
    ``nxt``, without its spikes ever being stored (:func:`spikeopt.population.lif.lif_project`).

    Every member's synapses in one (N, N' + r + 1) matrix: ``W^T``, its low-rank ``B_i``
    (or its own full-rank ``W_i^T``), and a column of ones that counts the spikes of each row;
    zero columns pad it to a multiple of :data:`MATMUL_COLUMNS` (a 256 x 11 operand ran the
    matmul ~3x slower than 256 x 16 here).
    """
    c, n_out, e = ctx.noise.size, nxt.weight.shape[0], ctx.noise[nxt.weight]
    n_in = nxt.weight.shape[1]
    cur = ctx.noise.current(layer.neuron, cur)
    lead: tuple[int, ...] = () if e is None else (c,)  # node perturbation: members share W
    if isinstance(e, Tensor):
        parts = [ctx.noise.weights(nxt.weight).transpose(1, 2)]
    else:
        parts = [nxt.weight.T.expand(*lead, n_in, n_out)] + ([] if e is None else [e[1]])
    width = sum(part.shape[-1] for part in parts)  # the ones column sits right after
    pad = -(width + 1) % MATMUL_COLUMNS
    parts += [cur.new_ones(*lead, n_in, 1), cur.new_zeros(*lead, n_in, pad)]
    p, out = neuron_params(layer.neuron, ctx), ctx.scratch(layer.neuron, cur)
    z = lif_project(cur, p, steps, torch.cat(parts, -1), out)
    rate = z[..., width].sum((0, 2)) / (steps * z.shape[2] * n_in)
    drive = z[..., :n_out]  # (T, c, B, N')
    if isinstance(e, tuple):  # + sigma (s B_i) A_i^T, every step and member at once
        drive = drive + ctx.noise.sigma * (z[..., n_out:width] @ e[0].transpose(1, 2))
    if nxt.bias is not None:
        drive = drive + ctx.noise.weights(nxt.bias).unsqueeze(1)  # (c, 1, N')
    return rate[:, None, None, None], drive.transpose(0, 1)


def recurrent_layer(
    layer: RecurrentLIF, h: Tensor, shared: bool, ctx: Context, keep_mems: bool
) -> tuple[Tensor, Tensor | None]:
    """RecurrentLIF: ``I[t] = W x[t] + V s[t-1]`` for every member, stepped over time."""
    x, static, steps = time_rows(h, shared)
    c = ctx.noise.size
    lead = x.shape[:-1] if shared else x.shape[1:-1]
    flat = x.reshape(-1, x.shape[-1]) if shared else x.reshape(c, -1, x.shape[-1])
    drive = linear_current(layer.fc, flat, shared, ctx).reshape(c, *lead, -1)
    p, fn = neuron_params(layer.neuron, ctx), layer.neuron.spike_fn
    drive = ctx.noise.current(layer.neuron, drive, whole=False)
    static = drive.dim() == 3  # step noise makes a static drive change every step
    i0 = drive if static else drive[:, 0]  # (c, B, N)
    state, s = LIFState(torch.full_like(i0, p.v_rest)), torch.zeros_like(i0)
    spikes, mems, recs = [], [], []
    tapped = id(layer.neuron) in ctx.noise.taps  # the recorded current includes V s[t-1]
    for t in range(steps):  # the reference step: the recurrence needs a bmm every step anyway
        rec = member_matmul(s, layer.rec.weight, ctx)
        s, state = lif_step((drive if static else drive[:, t]) + rec, state, p, fn)
        spikes.append(s)
        mems.append(state.v)
        if tapped:
            recs.append(rec)
    if tapped:
        whole = (drive.unsqueeze(1) if static else drive) + torch.stack(recs, 1)
        ctx.noise.seen(layer.neuron, whole)
    return torch.stack(spikes, 1), torch.stack(mems, 1)


_LAYERS: dict[type, Callable[[Any, Tensor, bool, Context, bool], tuple[Tensor, Tensor | None]]] = {
    LinearLIF: linear_layer,
    RecurrentLIF: recurrent_layer,
    ConvLIF: conv_layer,
}


def _projected_into(model: SNN, i: int) -> tuple[LinearLIF, LinearLIF] | None:
    """Hidden layer ``i`` and the next one when ``i``'s spikes can go straight into its current
    (:func:`project_layer`), else None: not into a flatten or a dropout mask, which need them."""
    if i + 1 >= len(model.layers) or model.flatten_at == i + 1:
        return None
    layer, nxt = model.layers[i], model.layers[i + 1]
    if (model.dropout > 0 and model.training) or not can_project(layer, nxt):
        return None
    return layer, nxt  # type: ignore[return-value]  # can_project checked both types


@torch.no_grad()
def snn_forward(
    model: SNN, x: Tensor, ctx: Context, keep_hidden: bool = True, per_member: bool = False
) -> tuple[list[Tensor], list[Tensor]]:
    """Spikes and membranes of every layer for every member of the chunk, each (c, B, T, N).

    ``x`` is the shared input (B, T, ...), or with ``per_member`` one input per member
    (c, B, T, ...) -- a batched rollout, where each member sees its own observations.
    (Views of the time-major activity.) With ``keep_hidden=False`` a hidden layer's entries
    are its per-member mean rate as a (c, 1, 1, 1) tensor: losses read hidden layers only
    through their mean (``rate_penalty``), which this keeps exact, and hidden membranes are
    never written at all.
    """
    h, shared = (x.transpose(1, 2), False) if per_member else (x, True)
    spikes, mems = [], []
    last = len(model.layers) - 1
    fed: tuple[Tensor, int] | None = None  # this layer's current, computed by the one before
    for i, layer in enumerate(model.layers):
        if i == model.flatten_at and fed is None:
            h = h.flatten(2 if shared else 3)  # keeps a stride-0 time axis
        keep = keep_hidden or i == last
        pair = None if keep else _projected_into(model, i)
        if pair is not None:
            cur, steps = fed or input_current(pair[0], h, shared, ctx)
            rate, fed_cur = project_layer(pair[0], cur, steps, pair[1].fc, ctx)
            spikes.append(rate)
            mems.append(rate)
            fed = fed_cur, steps
            continue
        if not keep and type(layer) is ConvLIF and layer.pool != "none" and constant_lif(layer):
            rate, h = pooled_conv_layer(layer, h, shared, ctx)
            spikes.append(rate)
            mems.append(rate)
            h, shared = _dropout(model, i, h, ctx, in_place=True), False
            continue
        if fed is not None:  # a dense layer whose current the layer before computed
            dense: LinearLIF = layer  # type: ignore[assignment]
            s, v = neuron_layer(dense.neuron, *fed, ctx, dense.li, keep)
            fed = None
        else:
            s, v = _LAYERS[type(layer)](layer, h, shared, ctx, keep)  # (c, T, B, ...)
        if keep:
            assert v is not None
            spikes.append(s.flatten(3).transpose(1, 2))
            mems.append(v.transpose(1, 2))
        else:
            rate = s.reshape(s.shape[0], -1).mean(1)[:, None, None, None]
            spikes.append(rate)
            mems.append(rate)
        h, shared = s, False
        if isinstance(layer, ConvLIF):
            h = layer.pool_out(s.flatten(0, 1)).unflatten(0, s.shape[:2])
        # in place unless the caller still holds these spikes (an activity-sized copy saved)
        h = _dropout(model, i, h, ctx, in_place=not (keep and h is s))
    return spikes, mems


def _dropout(model: SNN, i: int, h: Tensor, ctx: Context, in_place: bool) -> Tensor:
    """Layer ``i``'s output (c, T, B, ...) times the training dropout mask, one mask shared by
    every member (common random numbers); ``h`` itself without dropout."""
    if not (model.dropout > 0 and model.training and i < len(model.layers) - 1):
        return h
    key = ("dropout", i)
    if key not in ctx.shared:
        ones = torch.ones(h.shape[2], 1, *h.shape[3:], dtype=h.dtype, device=h.device)
        ctx.shared[key] = F.dropout(ones, model.dropout, training=True).transpose(0, 1)
    return h.mul_(ctx.shared[key]) if in_place else h * ctx.shared[key]
