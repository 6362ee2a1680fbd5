"""Fluctuation-driven initialisation (Rossbroich, Gygax & Zenke 2022), measured on real batches.

Each spiking layer's *free* membrane (no threshold, no reset) gets mean ``mu_U = theta - xi *
sigma_U`` and std ``sigma_U``: neurons sit ``xi`` stds below threshold and fire from
fluctuations. Where stork assumes a Poisson input rate, we capture each layer's input on the
first ``n_batches`` batches (a forward pre-hook: any module calling the layers in order works)
and measure, layer by layer in forward order, the upstream layers already set.

The free membrane above rest is ``U[t] = sum_{k<=t} beta^(t-k) I[k]``, from ``U[-1] = 0``, over
the T steps the network runs; its statistics pool samples, steps and neurons (the membrane
mostly does not reach stationarity in T = 4-16 steps at tau_m = 20, so the ramp from rest
counts). The current is linear in the parameters: with a mean carrier ``P`` (the filtered
input sum ``S = sum_j F_j`` for weights ``p + q z``, or the filtered constant ``G[t] =
sum_{k<=t} beta^k`` for a bias ``p``), a normal draw ``z`` (``Z = sum_j z_j F_j``) and a fixed
recurrent part ``O``, ``U = p P + q Z + O``, so ``E[U] = p E[P] + q E[Z] + E[O]`` and ``Var U =
w^T Cov(P, Z, O) w`` with ``w = (p, q, 1)``. We solve both exactly for the realised ``z``; in
expectation over ``z`` this is stork's ``mu_w = mu_U / E[S]``, ``sigma_w^2 = (sigma_U^2 -
mu_w^2 Var S) / E[sum_j F_j^2]``, and a readout of 10 neurons hits its target like a wide layer.

Rules:

- ``theta`` is the layer's ``v_threshold - v_rest``; ``sigma_U = sigma_u * theta`` with
  ``sigma_u=None`` meaning ``1 / xi``, so ``mu_U = 0``: stork's centred scheme (its
  ``sigma_u=1`` is ``xi=1`` here). A negative ``mu_U`` (``sigma_u=1, xi=2``) needs an
  inhibitory mean whose ramp from rest eats the variance: on digits it silenced LIF readouts.
- Non-negative presynaptic input (spikes, pixels in [0, 1]): the weight mean carries ``mu_U``,
  the bias is zeroed. Signed input (standardised data): the bias carries the mean, the weights
  are zero-mean.
- ``z`` is drawn orthogonal to the mean input (conv: the principal subspace of the mean patches
  at all positions). Repeat-encoded inputs do not fluctuate in time: weights that project on the
  mean input fix a neuron's offset, a negative one silences it on every sample (half the first
  layer of a digits MLP without the projection, none with it).
- RecurrentLIF: feed-forward weights get ``alpha`` of the variance, first alone; then the
  layer's own spikes are measured, zero-mean recurrent weights take ``1 - alpha`` of it and the
  feed-forward part is re-solved around them (``PASSES`` fixed-point passes).
- ConvLIF with batch norm: the BN running statistics are set to the conv output's measured
  per-channel mean and variance (so eval mode matches) and the BN affine (gamma, beta) hits
  the targets. Without BN a conv is a dense layer over its C_in*k*k patches.
- The readout (last layer called): an LI readout gets mean 0 and free-membrane std 1 (logits of
  unit scale); a spiking readout is treated like a hidden layer.
- Runs under ``torch.no_grad`` in eval mode (no dropout) and restores every module's mode;
  deterministic given the batches and the torch RNG. Memory: one layer's inputs and free
  membrane terms over the batches.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikeopt.config import ConfigError
from spikeopt.functional.neuron import decay_matrix
from spikeopt.nn.layers import ConvLIF, LinearLIF, RecurrentLIF, is_static

Layer = LinearLIF | RecurrentLIF | ConvLIF
ENERGY = 0.9  # share of the mean patches' energy projected out of conv weights (dense: all)
PASSES = 2  # recurrent fixed-point passes; the stats move by < 1 % in the second


class _Stop(Exception):
    """Raised by the capture hook: nothing after the captured layer needs to run."""


def fluct_init(
    model: nn.Module,
    loader: Iterable[Any],
    xi_target: float = 2.0,
    alpha: float = 0.9,
    n_batches: int = 4,
    sigma_u: float | None = None,
) -> dict[str, dict[str, float]]:
    """Set every spikeopt layer's parameters from real batches; per-layer target/achieved stats."""
    if n_batches < 1:
        raise ConfigError(f"model.fluct_batches must be >= 1, got {n_batches}")
    if not math.isfinite(xi_target):
        raise ConfigError(f"model.fluct_xi must be a finite number, got {xi_target}")
    if not 0 < alpha <= 1:
        raise ConfigError(f"model.fluct_alpha must be in (0, 1] (1 = no recurrence), got {alpha}")
    sd = 1 / xi_target if sigma_u is None and xi_target != 0 else sigma_u
    if sd is None or not (math.isfinite(sd) and sd > 0):
        raise ConfigError(f"fluct_init: sigma_u must be > 0 (its default 1/xi needs xi > 0), "
                          f"got sigma_u={sigma_u}, xi={xi_target}")  # fmt: skip
    found = [m for m in model.modules() if isinstance(m, Layer)]
    if not found:
        raise ConfigError("fluct_init: the model has no LinearLIF/RecurrentLIF/ConvLIF layer; "
                          "use model.init=default|kaiming|xavier for it")  # fmt: skip
    device = next(found[0].parameters()).device
    batches = [_first(b).to(device) for b in itertools.islice(loader, n_batches)]
    if not batches:
        raise ConfigError("fluct_init: the loader yielded no batches; pass the training loader")
    modes = {m: m.training for m in model.modules()}
    names = {m: n for n, m in model.named_modules()}
    stats = {}
    model.eval()
    try:
        with torch.no_grad():
            order = _call_order(model, found, batches[0])
            for i, layer in enumerate(order):
                xs = _capture(model, layer, batches)
                theta = _constants(layer)[0]
                li = isinstance(layer, LinearLIF) and layer.li
                mean, std = (0.0, 1.0) if li else (theta * (1 - xi_target * sd), theta * sd)
                _init_layer(layer, xs, mean, std, alpha)
                got = measure(layer, xs) | {"readout": float(i == len(order) - 1)}
                stats[names[layer]] = dict(theta=theta, target_mean=mean, target_std=std, **got)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return stats


def _first(batch: Any) -> Tensor:
    """The input of a batch that is ``x`` or ``(x, y, ...)``."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, Tensor) or x.dim() < 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ConfigError(f"fluct_init: batches must be encoded inputs (B, T, ...), got {got}")
    return x


def _call_order(model: nn.Module, layers: list[Layer], x: Tensor) -> list[Layer]:
    """The spikeopt layers in the order ``model``'s forward calls them."""
    order: list[Layer] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: None if m in order else order.append(m))
             for m in layers]  # fmt: skip
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return order


def _capture(model: nn.Module, layer: Layer, batches: list[Tensor]) -> list[Tensor]:
    """The input ``layer`` receives on each batch; each forward stops there."""
    got: list[Tensor] = []

    def grab(module: nn.Module, args: tuple[Any, ...]) -> None:
        got.append(args[0])
        raise _Stop

    hook = layer.register_forward_pre_hook(grab)
    try:
        for x in batches:
            with contextlib.suppress(_Stop):
                model(x)
    finally:
        hook.remove()
    return got


def _constants(layer: Layer) -> tuple[float, float]:
    """Threshold above rest and per-step decay (means of learnable ones: equal at init)."""
    p = layer.neuron.params()
    theta = float(torch.as_tensor(p.v_threshold).mean()) - p.v_rest
    return theta, float(torch.as_tensor(p.beta).mean())


def filtered(cur: Tensor, steps: int, beta: float) -> Tensor:
    """Free membrane (B, T, C, K) of a current (B, C, K) held for ``steps``, or (B, T, C, K)."""
    m = decay_matrix(beta, steps, cur)  # m[t, s] = beta^(t-s) for s <= t
    if cur.dim() == 3:  # a constant current: the gain G[t] = sum_{k<=t} beta^k
        return cur[:, None] * m.sum(1).view(1, steps, 1, 1)
    return torch.einsum("ts,bsck->btck", m, cur)


def _apply(op: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``op``'s linear map with ``weight`` on x (B, T, ...): (B, C, K) static, or (B, T, C, K)."""
    static = is_static(x)
    frames = x[:, 0] if static else x.flatten(0, 1)
    if isinstance(op, nn.Conv2d):
        out = F.conv2d(frames, weight, bias, op.stride, op.padding, op.dilation, op.groups)
    else:
        out = F.linear(frames, weight, bias)
    out = out.reshape(out.shape[0], out.shape[1], -1)
    return out if static else out.unflatten(0, x.shape[:2])


def _moments(parts: Iterable[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Pooled mean (3,) and covariance (3, 3) of (P, Z, O), each broadcast to Z's shape."""
    n, s1, s2 = 0, torch.zeros(3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)
    for terms in parts:
        full = [t.expand_as(terms[1]) for t in terms]
        n += full[1].numel()
        for i in range(3):
            s1[i] += full[i].sum(dtype=torch.float64).cpu()
            for j in range(i, 3):
                s2[i, j] += (full[i] * full[j]).sum(dtype=torch.float64).cpu()
                s2[j, i] = s2[i, j]
    mu = s1 / n
    return mu, s2 / n - torch.outer(mu, mu)


def _solve(mu: Tensor, cov: Tensor, mean: float, var: float) -> tuple[float, float]:
    """``(p, q)``, ``q >= 0``, that give ``p P + q Z + O`` the target mean and variance."""
    a, c, o = mu.tolist()
    if abs(a) < 1e-12 * max(1.0, abs(c)):  # no mean carrier (silent input): the variance only
        w0, d = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])
    else:  # the mean fixes p = (mean - q c - o) / a, so w = w0 + q d
        w0, d = torch.tensor([(mean - o) / a, 0.0, 1.0]), torch.tensor([-c / a, 1.0, 0.0])
    w0, d = w0.double(), d.double()
    qa, qb, qc = float(d @ cov @ d), 2 * float(d @ cov @ w0), float(w0 @ cov @ w0) - var
    if qa <= 0:
        return float(w0[0]), 0.0
    disc = qb * qb - 4 * qa * qc
    # no real root: the carrier alone exceeds the variance; take the closest one reachable
    q = max(0.0, (-qb + math.sqrt(disc)) / (2 * qa) if disc >= 0 else -qb / (2 * qa))
    return float(w0[0] + q * d[0]), q


def _init_layer(layer: Layer, xs: list[Tensor], mean: float, std: float, alpha: float) -> None:
    """Solve and set one layer's parameters for a free membrane of ``mean`` and ``std``."""
    beta = _constants(layer)[1]
    if isinstance(layer, ConvLIF) and layer.bn is not None:
        _init_batchnorm(layer, layer.bn, xs, mean, std, beta)
        return
    op = layer.conv if isinstance(layer, ConvLIF) else layer.fc
    z = _orthogonal_to_mean(op, xs, torch.randn_like(op.weight), beta)
    use_bias = op.bias is not None and any(bool((x < 0).any()) for x in xs)
    ones, const, zero = torch.ones_like(op.weight[:1]), xs[0].new_ones(1, 1, 1), xs[0].new_zeros(())
    carrier = [filtered(const if use_bias else _apply(op, x, ones), x.shape[1], beta) for x in xs]
    noise = [filtered(_apply(op, x, z), x.shape[1], beta) for x in xs]

    def set_ff(p: float, q: float) -> None:
        op.weight.copy_(q * z if use_bias else p + q * z)
        if op.bias is not None:
            op.bias.fill_(p if use_bias else 0.0)

    rnn = layer if isinstance(layer, RecurrentLIF) and alpha < 1 else None
    if isinstance(layer, RecurrentLIF):
        layer.rec.weight.zero_()  # the feed-forward part alone first, with its share alpha
    share = alpha if rnn is not None else 1.0
    set_ff(*_solve(*_moments(zip(carrier, noise, [zero] * len(xs))), mean, share * std**2))
    if rnn is None:
        return
    z_rec = torch.randn_like(rnn.rec.weight)
    for _ in range(PASSES):
        prev = [F.pad(rnn(x)[0], (0, 0, 1, 0))[:, :-1] for x in xs]  # s[t-1]: its input
        z_r = _orthogonal_to_mean(rnn.rec, prev, z_rec, beta)
        rec = [filtered(_apply(rnn.rec, s, z_r), s.shape[1], beta) for s in prev]
        var_r = float(_moments((zero, r, zero) for r in rec)[1][1, 1])
        r_scale = math.sqrt((1 - alpha) * std**2 / var_r) if var_r > 0 else 0.0
        rnn.rec.weight.copy_(r_scale * z_r)
        parts = zip(carrier, noise, [r_scale * r for r in rec])
        set_ff(*_solve(*_moments(parts), mean, std**2))


def _orthogonal_to_mean(op: nn.Module, xs: list[Tensor], w: Tensor, beta: float) -> Tensor:
    """``w`` with each output's fan-in weights orthogonal to the mean (filtered) inputs."""
    frame: Tensor | float = 0.0
    for x in xs:  # the time average of the filtered input weighs step s by mean_t beta^(t-s)
        wt = decay_matrix(beta, x.shape[1], x).mean(0)
        frame = frame + (wt.sum() * x[:, 0].sum(0) if is_static(x)
                         else torch.einsum("s,bs...->...", wt, x))  # fmt: skip
    assert isinstance(frame, Tensor)
    if isinstance(op, nn.Conv2d):  # mean patches (fan_in, positions)
        assert not isinstance(op.padding, str)
        means = F.unfold(frame[None], op.kernel_size, op.dilation, op.padding, op.stride)[0]
    else:
        means = frame.reshape(-1, 1)
    u, s, _ = torch.linalg.svd(means.double(), full_matrices=False)
    if float(s[0]) == 0:
        return w
    k = int(((s**2).cumsum(0) / (s**2).sum() < ENERGY).sum()) + 1  # their principal subspace
    basis = u[:, :k].to(w.dtype)
    flat = w.flatten(1)
    return (flat - (flat @ basis) @ basis.t()).view_as(w)


def _init_batchnorm(
    layer: ConvLIF, bn: nn.BatchNorm2d, xs: list[Tensor], mean: float, std: float, beta: float
) -> None:
    """Running stats = the conv output's measured ones; the BN affine hits the targets."""
    layer.conv.weight.copy_(_orthogonal_to_mean(layer.conv, xs, layer.conv.weight, beta))
    conv = [_apply(layer.conv, x, layer.conv.weight, layer.conv.bias) for x in xs]
    dims = [(0, 2) if c.dim() == 3 else (0, 1, 3) for c in conv]  # all but the channel axis
    n = sum(c.numel() // c.shape[-2] for c in conv)
    m1 = sum(c.sum(d, dtype=torch.float64) for c, d in zip(conv, dims)) / n
    m2 = sum((c.double() ** 2).sum(d) for c, d in zip(conv, dims)) / n
    assert isinstance(m1, Tensor) and isinstance(m2, Tensor)
    var = (m2 - m1**2).clamp(min=0)
    bn.reset_running_stats()
    bn.running_mean.copy_(m1)  # type: ignore[union-attr]
    bn.running_var.copy_(var)  # type: ignore[union-attr]
    shift, scale = m1.to(conv[0].dtype)[:, None], (var + bn.eps).rsqrt().to(conv[0].dtype)[:, None]
    norm = [filtered((c - shift) * scale, x.shape[1], beta) for c, x in zip(conv, xs)]
    const = xs[0].new_ones(1, 1, 1)
    parts = ((filtered(const, x.shape[1], beta), z, const.new_zeros(())) for z, x in zip(norm, xs))
    p, q = _solve(*_moments(parts), mean, std**2)
    bn.weight.fill_(q)
    bn.bias.fill_(p)


def measure(layer: Layer, xs: list[Tensor]) -> dict[str, float]:
    """Free-membrane mean/std (above rest), spike rate, share of never-firing neurons on ``xs``."""
    beta, spiking = _constants(layer)[1], not (isinstance(layer, LinearLIF) and layer.li)
    n, s1, s2, spikes, fired = 0, 0.0, 0.0, 0.0, torch.zeros(())
    for x in xs:
        if isinstance(layer, ConvLIF):
            static = is_static(x)
            cur = layer.current(x[:, 0] if static else x.flatten(0, 1)).flatten(2)
            cur = cur if static else cur.unflatten(0, x.shape[:2])
        else:
            cur = _apply(layer.fc, x, layer.fc.weight, layer.fc.bias)
        u = filtered(cur, x.shape[1], beta)
        if isinstance(layer, RecurrentLIF):  # its own spikes s[t-1] through the recurrent weights
            prev = F.pad(layer(x)[0], (0, 0, 1, 0))[:, :-1]
            u = u + filtered(_apply(layer.rec, prev, layer.rec.weight), x.shape[1], beta)
        u = u.double()
        n, s1, s2 = n + u.numel(), s1 + float(u.sum()), s2 + float((u**2).sum())
        if spiking:
            s = layer(x)[0].flatten(2)
            spikes, fired = spikes + float(s.sum()), fired + s.sum((0, 1))
    mean = s1 / n
    dead = float((fired == 0).double().mean()) if spiking else 0.0
    return {"mean": mean, "std": math.sqrt(max(s2 / n - mean**2, 0.0)),
            "rate": spikes / n, "dead": dead}  # fmt: skip
