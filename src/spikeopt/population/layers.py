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
  (:func:`project_layer`), a conv layer hands them to its pooling (:func:`pooled_conv_layer`),
  while they are still in cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikeopt.functional.neuron import LIFParams, LIFState, beta_from_tau, lif_step
from spikeopt.nn.layers import LIF, ConvLIF, LinearLIF, RecurrentLIF, is_static
from spikeopt.nn.models import SNN
from spikeopt.population.lif import li_run, lif_feed, lif_project, lif_run
from spikeopt.population.noise import ChunkNoise


@dataclass
class Context:
    """One chunk's noise, plus what every chunk of the generation shares (cached once)."""

    noise: ChunkNoise
    shared: dict[tuple[str, int], Tensor] = field(default_factory=dict)  # by (kind, id(module))

    def scratch(self, owner: object, like: Tensor) -> Callable[[str, tuple[int, ...]], Tensor]:
        """``out(name, shape)`` for ``owner``: a tensor reused by every chunk of the generation
        (valid until the next chunk runs)."""

        def out(name: str, shape: tuple[int, ...]) -> Tensor:
            key = (f"scratch-{name}", id(owner))
            buf = self.shared.get(key)
            if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
                buf = self.shared[key] = like.new_empty(shape)
            return buf[: shape[0]]

        return out


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
    e = ctx.noise[fc.weight]
    bias = None if fc.bias is None else ctx.noise.weights(fc.bias).unsqueeze(1)  # (c, 1, N)
    if shared and not isinstance(e, Tensor):
        return _shared_lowrank_current(fc, h, ctx, bias)
    if shared:
        cur = h @ ctx.noise.weights(fc.weight).transpose(1, 2)
    else:
        cur = member_matmul(h, fc.weight, ctx)
    return cur if bias is None else cur + bias


def _shared_lowrank_current(fc: nn.Linear, h: Tensor, ctx: Context, bias: Tensor | None) -> Tensor:
    """``x W^T`` (cached for the generation) + each bias + ``sigma (x B_i) A_i^T`` in place."""
    c, sigma, e = ctx.noise.size, ctx.noise.sigma, ctx.noise[fc.weight]
    key = ("linear", id(fc))
    if key not in ctx.shared:  # the same for every member of the generation
        ctx.shared[key] = h @ fc.weight.T
    base = ctx.shared[key]
    cur = base.expand(c, *base.shape).clone() if bias is None else base + bias
    if isinstance(e, tuple):
        a, b = e  # x @ [B_1 .. B_c] in one matmul: (M, D) @ (D, c*r)
        z = (h @ b.permute(1, 0, 2).flatten(1)).view(h.shape[0], c, -1).transpose(0, 1)
        cur.baddbmm_(z, a.transpose(1, 2), alpha=sigma)
    return cur


def _conv(x: Tensor, w: Tensor, conv: nn.Conv2d, groups: int = 1) -> Tensor:
    return F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, groups)


def _grouped(frames: Tensor) -> Tensor:
    """(c, F, C, H, W) -> (F, c*C, H, W): member-specific frames as conv groups."""
    return frames.transpose(0, 1).flatten(1, 2)


def conv_current(conv: nn.Conv2d, frames: Tensor, shared: bool, ctx: Context) -> Tensor:
    """Current (c, F, C', H, W) of frames: shared (F, C, H, W) or member-specific (c, F, ...).

    Member-specific frames go through one grouped convolution with every member's own
    kernels and bias (``W + sigma A_i B_i^T`` materialised: kernels are small, activity is
    not), which measured ~2x faster than a shared-kernel conv plus a low-rank grouped conv with
    one output channel per group, and needs no extra passes over the activity.
    """
    c, e = ctx.noise.size, ctx.noise[conv.weight]
    if not shared or isinstance(e, Tensor):
        x, groups = (frames, 1) if shared else (_grouped(frames), c)  # one group per member
        w = ctx.noise.weights(conv.weight).flatten(0, 1)  # (c*C', C, k, k)
        bias = None if conv.bias is None else ctx.noise.weights(conv.bias).flatten()
        out = F.conv2d(x, w, bias, conv.stride, conv.padding, conv.dilation, groups)
        return out.unflatten(1, (c, -1)).transpose(0, 1)
    key = ("conv", id(conv))
    if key not in ctx.shared:  # the same for every member of the generation
        ctx.shared[key] = _conv(frames, conv.weight, conv)
    base = ctx.shared[key]  # (F, C', H, W)
    if e is None:
        cur = base.expand(c, *base.shape)
    else:  # an r-channel conv with kernels B_i, then a 1x1 mix by sigma A_i, added in place
        a, b = e
        kernels = b.transpose(1, 2).reshape(-1, *conv.weight.shape[1:])  # (c*r, C, k, k)
        z = _conv(frames, kernels, conv).unflatten(1, (c, -1)).transpose(0, 1)  # (c, F, r, H, W)
        mix = (ctx.noise.sigma * a)[:, None, :, :, None, None]  # (c, 1, C', r, 1, 1)
        cur = torch.addcmul(base, z[:, :, None, 0], mix[..., 0, :, :])
        for j in range(1, z.shape[2]):
            cur.addcmul_(z[:, :, None, j], mix[..., j, :, :])
    if conv.bias is not None:
        bias = ctx.noise.weights(conv.bias)[:, None, :, None, None]
        cur = cur + bias if e is None else cur.add_(bias)
    return cur


def batch_norm(bn: nn.BatchNorm2d, cur: Tensor, ctx: Context) -> Tensor:
    """Batch norm of (c, F, C, H, W) with each member's own batch statistics and affine.

    Folded into one per-channel scale and shift, so the activity is read once more, not four
    times (subtract, scale, weight, bias)."""
    if bn.training or bn.running_mean is None:  # train mode: statistics of this member's batch
        var, mean = torch.var_mean(cur, (1, 3, 4), unbiased=False, keepdim=True)
    else:
        assert bn.running_var is not None
        mean, var = bn.running_mean[:, None, None], bn.running_var[:, None, None]
    scale = torch.rsqrt(var + bn.eps)  # (c, 1, C, 1, 1) or (C, 1, 1)
    if bn.weight is not None and bn.bias is not None:
        scale = scale * ctx.noise.weights(bn.weight)[:, None, :, None, None]
        shift = ctx.noise.weights(bn.bias)[:, None, :, None, None] - mean * scale
    else:
        shift = -mean * scale
    return torch.addcmul(shift, cur, scale)


def neuron_params(neuron: LIF, ctx: Context) -> LIFParams:
    """LIF constants; learnable tau/threshold become per-member tensors (c, 1, N)."""
    p = neuron.params()
    if neuron.tau is not None:
        tau = ctx.noise.weights(neuron.tau).clamp(min=1e-2)
        p = p._replace(beta=beta_from_tau(tau, neuron.cfg.dt).unsqueeze(1))  # type: ignore[union-attr]
    if neuron.threshold is not None:
        p = p._replace(v_threshold=ctx.noise.weights(neuron.threshold).unsqueeze(1))
    return p


def neuron_layer(
    neuron: LIF, cur: Tensor, steps: int, ctx: Context, li: bool = False, keep_mems: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Spikes and membranes (c, T, B, N) for a current (c, B, N) (static) or (c, T, B, N)."""
    p = neuron_params(neuron, ctx)
    if li:
        v = li_run(cur, p, steps)
        return v, v
    return lif_run(cur, p, neuron.spike_fn, steps, keep_mems, ctx.scratch(neuron, cur))


def _rows(h: Tensor, shared: bool) -> tuple[Tensor, bool, int]:
    """Synapse input in time-major row order and (static?, T).

    Shared (B, T, ...) -> (B, ...) when static, else (T, B, ...); member (c, T, B, ...) as is.
    """
    if not shared:
        return h, False, h.shape[1]
    if is_static(h):
        return h[:, 0], True, h.shape[1]
    return h.transpose(0, 1), False, h.shape[1]


def linear_layer(
    layer: LinearLIF, h: Tensor, shared: bool, ctx: Context, keep_mems: bool
) -> tuple[Tensor, Tensor | None]:
    """LinearLIF on (B, T, D) shared or (c, T, B, D) member inputs -> (c, T, B, N) twice."""
    cur, steps = input_current(layer, h, shared, ctx)
    return neuron_layer(layer.neuron, cur, steps, ctx, layer.li, keep_mems)


def input_current(layer: LinearLIF, h: Tensor, shared: bool, ctx: Context) -> tuple[Tensor, int]:
    """A LinearLIF's current (c, B, N) (static) or (c, T, B, N), and T."""
    x, _, steps = _rows(h, shared)
    lead = x.shape[:-1] if shared else x.shape[1:-1]  # (B,) | (T, B)
    flat = x.reshape(-1, x.shape[-1]) if shared else x.reshape(x.shape[0], -1, x.shape[-1])
    return linear_current(layer.fc, flat, shared, ctx).reshape(ctx.noise.size, *lead, -1), steps


def _constant_lif(layer: LinearLIF | ConvLIF) -> bool:
    """True when the layer's tau and threshold are constants (not learnable, per member)."""
    return layer.neuron.tau is None and layer.neuron.threshold is None


def can_project(layer: nn.Module, nxt: nn.Module) -> bool:
    """True when a hidden ``layer``'s spikes can go straight into ``nxt``'s current step by step
    (:func:`project_layer`): dense LIF into dense, with constant (not learnable) tau/threshold."""
    return (
        type(layer) is LinearLIF
        and type(nxt) is LinearLIF
        and not layer.li
        and _constant_lif(layer)
    )


def project_layer(
    layer: LinearLIF, cur: Tensor, steps: int, nxt: nn.Linear, ctx: Context
) -> tuple[Tensor, Tensor]:
    """A hidden layer's mean rate (c, 1, 1, 1) and the current (c, T, B, N') it drives in
    ``nxt``, without its spikes ever being stored (:func:`spikeopt.population.lif.lif_project`).

    Every member's synapses in one (N, N' + r + 1) matrix: ``W^T``, its low-rank ``B_i``
    (or its own full-rank ``W_i^T``), and a column of ones that counts the spikes of each row.
    """
    c, n_out, e = ctx.noise.size, nxt.weight.shape[0], ctx.noise[nxt.weight]
    n_in = nxt.weight.shape[1]
    if isinstance(e, Tensor):
        parts = [ctx.noise.weights(nxt.weight).transpose(1, 2)]
    else:
        parts = [nxt.weight.T.expand(c, n_in, n_out)] + ([] if e is None else [e[1]])
    parts.append(cur.new_ones(c, n_in, 1))
    p, out = neuron_params(layer.neuron, ctx), ctx.scratch(layer.neuron, cur)
    z = lif_project(cur, p, steps, torch.cat(parts, 2), out)
    rate = z[..., -1].sum((0, 2)) / (steps * z.shape[2] * n_in)
    drive = z[..., :n_out]  # (T, c, B, N')
    if isinstance(e, tuple):  # + sigma (s B_i) A_i^T, every step and member at once
        drive = drive + ctx.noise.sigma * (z[..., n_out:-1] @ e[0].transpose(1, 2))
    if nxt.bias is not None:
        drive = drive + ctx.noise.weights(nxt.bias).unsqueeze(1)  # (c, 1, N')
    return rate[:, None, None, None], drive.transpose(0, 1)


def recurrent_layer(
    layer: RecurrentLIF, h: Tensor, shared: bool, ctx: Context, keep_mems: bool
) -> tuple[Tensor, Tensor | None]:
    """RecurrentLIF: ``I[t] = W x[t] + V s[t-1]`` for every member, stepped over time."""
    x, static, steps = _rows(h, shared)
    c = ctx.noise.size
    lead = x.shape[:-1] if shared else x.shape[1:-1]
    flat = x.reshape(-1, x.shape[-1]) if shared else x.reshape(c, -1, x.shape[-1])
    drive = linear_current(layer.fc, flat, shared, ctx).reshape(c, *lead, -1)
    p, fn = neuron_params(layer.neuron, ctx), layer.neuron.spike_fn
    i0 = drive if static else drive[:, 0]  # (c, B, N)
    state, s = LIFState(torch.full_like(i0, p.v_rest)), torch.zeros_like(i0)
    spikes, mems = [], []
    for t in range(steps):  # the reference step: the recurrence needs a bmm every step anyway
        rec = member_matmul(s, layer.rec.weight, ctx)
        s, state = lif_step((drive if static else drive[:, t]) + rec, state, p, fn)
        spikes.append(s)
        mems.append(state.v)
    return torch.stack(spikes, 1), torch.stack(mems, 1)


def conv_layer(
    layer: ConvLIF, h: Tensor, shared: bool, ctx: Context, keep_mems: bool
) -> tuple[Tensor, Tensor | None]:
    """ConvLIF on (B, T, C, H, W) shared or (c, T, B, C, H, W) inputs.

    Returns spikes (c, T, B, C', H, W) and membranes (c, T, B, C'*H*W).
    """
    cur, steps, chw = conv_input_current(layer, h, shared, ctx)
    s, v = neuron_layer(layer.neuron, cur, steps, ctx, False, keep_mems)
    return s.view(*s.shape[:3], *chw), v


def conv_input_current(
    layer: ConvLIF, h: Tensor, shared: bool, ctx: Context
) -> tuple[Tensor, int, tuple[int, ...]]:
    """A ConvLIF's current (c, B, N) (static) or (c, T, B, N), T, and its (C', H, W)."""
    x, _, steps = _rows(h, shared)
    lead = x.shape[:-3] if shared else x.shape[1:-3]
    frames = x.reshape(-1, *x.shape[-3:]) if shared else x.flatten(1, x.dim() - 4)
    cur = conv_current(layer.conv, frames, shared, ctx)  # (c, F, C', H, W)
    if layer.bn is not None:
        cur = batch_norm(layer.bn, cur, ctx)
    return cur.reshape(ctx.noise.size, *lead, -1), steps, tuple(cur.shape[2:])


def pooled_conv_layer(
    layer: ConvLIF, h: Tensor, shared: bool, ctx: Context
) -> tuple[Tensor, Tensor]:
    """A hidden ConvLIF whose spikes are only pooled: its mean rate (c, 1, 1, 1) and the pooled
    spikes (c, T, B, C', H', W'), pooled step by step while they are in cache
    (:func:`spikeopt.population.lif.lif_feed`); the full-size spikes are never stored."""
    cur, steps, chw = conv_input_current(layer, h, shared, ctx)
    c, batch = cur.shape[0], cur.shape[-2]
    pooled: Tensor | None = None
    count = cur.new_zeros(c)

    def feed(i: int, j: int, t: int, fired: Tensor) -> None:
        nonlocal pooled
        frames = fired.view(j - i, batch, *chw)
        count[i:j] += frames.sum((1, 2, 3, 4))
        out = layer.pool_out(frames)  # (k, B, C', H', W'): pool_out reads (B, T, ...) alike
        if pooled is None:
            pooled = out.new_empty(c, steps, *out.shape[1:])
        pooled[i:j, t] = out

    lif_feed(cur, neuron_params(layer.neuron, ctx), steps, feed, ctx.scratch(layer.neuron, cur))
    assert pooled is not None
    rate = count / (steps * batch * math.prod(chw))
    return rate[:, None, None, None], pooled


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
        if not keep and type(layer) is ConvLIF and layer.pool != "none" and _constant_lif(layer):
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
