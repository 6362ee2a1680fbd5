"""Batched conv LIF layers of a population chunk (see :mod:`spikeopt.population.layers`).

On the shared input, a member's low-rank kernel change is an r-channel conv with the kernels
``B_i`` then a 1x1 mix by ``A_i`` (the shared ``x * W`` is computed once per generation);
member-specific inputs take one grouped conv (one group per member) with each member's
materialised kernels. Per-sample kernel noise (node perturbation's ``nodepert.conv=sample``)
takes one grouped conv too, one group per sample (shared input: each sample's frames against
its c members' kernel changes, added to the shared ``x * W``) or per member and sample. A
hidden conv layer whose spikes are only pooled pools them step by step inside the LIF loop,
while they are in cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikeopt.nn.layers import ConvLIF
from spikeopt.population.context import Context, neuron_layer, neuron_params, time_rows
from spikeopt.population.lif import lif_feed


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
    kernels = ctx.noise.kernels.get(id(conv.weight))
    if kernels is not None:
        return _per_sample_current(conv, frames, shared, kernels, ctx)
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


def _per_sample_current(
    conv: nn.Conv2d, frames: Tensor, shared: bool, kernels: Tensor, ctx: Context
) -> Tensor:
    """Current (c, F, C', H, W) when sample ``b`` of member ``i`` runs the kernel
    ``W + kernels[i, b]`` (kernels (c, B, C', C, k, k)); frames are time-major, frame ``f``
    being sample ``f % B``. Kernels are not perturbed otherwise (node perturbation); a bias
    takes its per-sample noise too."""
    c, batch = kernels.shape[:2]
    out_ch = conv.weight.shape[0]
    if shared:  # x * W once per generation, plus each sample against its members' changes
        key = ("conv", id(conv))
        if key not in ctx.shared:
            ctx.shared[key] = _conv(frames, conv.weight, conv)
        base = ctx.shared[key]  # (F, C', H, W)
        x = frames.reshape(-1, batch * frames.shape[1], *frames.shape[2:])  # (F/B, B*C, H, W)
        w = kernels.transpose(0, 1).reshape(-1, *conv.weight.shape[1:])  # (B*c*C', C, k, k)
        z = _conv(x, w, conv, groups=batch)  # (F/B, B*c*C', H', W')
        z = z.view(-1, batch, c, out_ch, *z.shape[2:]).permute(2, 0, 1, 3, 4, 5)
        cur = z.reshape(c, -1, *z.shape[3:]).add_(base)  # (c, F, C', H', W')
    else:  # every member's and sample's own kernel in one grouped conv
        steps = frames.shape[1] // batch
        x = frames.view(c, steps, batch, *frames.shape[2:]).transpose(0, 1)  # (F/B, c, B, ...)
        w = (kernels + conv.weight).flatten(0, 2)  # (c*B*C', C, k, k)
        z = _conv(x.reshape(steps, -1, *frames.shape[3:]), w, conv, groups=c * batch)
        z = z.view(steps, c, batch, out_ch, *z.shape[2:]).transpose(0, 1)
        cur = z.reshape(c, -1, *z.shape[3:])
    if conv.bias is not None:
        cur = cur.add_(per_frame(conv.bias, cur.shape[1], ctx))
    return cur


def per_frame(p: Tensor, frames: int, ctx: Context) -> Tensor:
    """A per-channel parameter (C,) as every member's value at every frame, (c, F, C, 1, 1):
    per sample (frame ``f`` being sample ``f % B``) when it takes per-sample noise, else
    ``(c, 1, C, 1, 1)`` for broadcasting."""
    change = ctx.noise.kernels.get(id(p))  # (c, B, C)
    if change is None:
        return ctx.noise.weights(p)[:, None, :, None, None]
    c, batch = change.shape[:2]
    value = (p + change)[:, None].expand(c, frames // batch, batch, p.shape[0])
    return value.reshape(c, frames, -1, 1, 1)


def batch_norm(bn: nn.BatchNorm2d, cur: Tensor, ctx: Context) -> Tensor:
    """Batch norm of (c, F, C, H, W) with each member's own batch statistics and affine.

    Train mode centres once (``cur - mean``), takes the variance as the 2-norm of the centred
    activity and scales it in place: ``torch.var_mean`` over these strided dims measured 2-3x
    slower (~30 % of an ``mnist1d-es`` generation). Eval mode folds the running statistics and
    the affine into one per-channel scale and shift.
    """
    weight: Tensor | float = 1.0
    bias: Tensor | None = None
    if bn.weight is not None and bn.bias is not None:  # per sample with per-sample noise
        weight = per_frame(bn.weight, cur.shape[1], ctx)
        bias = per_frame(bn.bias, cur.shape[1], ctx)
    if bn.training or bn.running_mean is None:  # train mode: statistics of this member's batch
        dims, n = (1, 3, 4), cur.shape[1] * cur.shape[3] * cur.shape[4]
        centred = cur - cur.sum(dims, keepdim=True) / n
        var = torch.linalg.vector_norm(centred, 2, dims, keepdim=True).square_() / n
        centred.mul_(torch.rsqrt(var + bn.eps) * weight)
        return centred if bias is None else centred.add_(bias)
    assert bn.running_var is not None
    mean, var = bn.running_mean[:, None, None], bn.running_var[:, None, None]
    scale = torch.rsqrt(var + bn.eps) * weight  # folded: the activity is read once
    shift = -mean * scale if bias is None else bias - mean * scale
    return torch.addcmul(shift, cur, scale)


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
    x, _, steps = time_rows(h, shared)
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
    cur = ctx.noise.current(layer.neuron, cur)
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
