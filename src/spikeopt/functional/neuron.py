"""Neuron dynamics as pure functions: ``(input, state, params) -> (output, state)``.

Discrete-time leaky integrate-and-fire (Gerstner et al., *Neuronal Dynamics*, ch. 1; the
exact-decay form used by snnTorch's ``Leaky``), with ``beta = exp(-dt / tau_m)``::

    u[t] = v_rest + beta * (v[t-1] - v_rest) + I[t]       (integrate, pre-spike membrane)
    s[t] = H(u[t] - v_threshold)                           (fire; surrogate gradient backward)
    v[t] = u[t] - v_threshold * s[t]                       (reset='subtract')
    v[t] = u[t] * (1 - s[t]) + v_reset * s[t]              (reset='zero')

``v[-1] = v_rest``. The membrane a layer reports is the post-reset ``v[t]``.
The leaky integrator (LI) readout is the same without the fire and reset lines.

:func:`lif_step` is the reference; :func:`lif_sequence` runs a whole ``(B, T, N)`` current
through it and is the hot path: when nothing about the neuron is learnable it runs the loop
without building an autograd graph and back-propagates through time by hand (checked against
the step loop in the tests). A time-invariant current may be given once as ``(B, N)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from spikeopt.functional.surrogate import Surrogate

RESETS: tuple[str, ...] = ("subtract", "zero")  # the two reset rules of the docstring


class LIFParams(NamedTuple):
    """LIF constants; ``beta`` and ``v_threshold`` may be tensors (learnable, per neuron)."""

    beta: float | Tensor = math.exp(-1 / 20)
    v_threshold: float | Tensor = 1.0
    v_reset: float = 0.0
    v_rest: float = 0.0
    reset: str = "subtract"
    detach_reset: bool = True


class LIFState(NamedTuple):
    """The membrane potential ``v`` (B, N)."""

    v: Tensor


def beta_from_tau(tau_m: float | Tensor, dt: float = 1.0) -> float | Tensor:
    """Per-step decay ``exp(-dt / tau_m)``."""
    if isinstance(tau_m, Tensor):
        return torch.exp(-dt / tau_m)
    return math.exp(-dt / tau_m)


def lif_init(x: Tensor, p: LIFParams) -> LIFState:
    """Resting state shaped like one time step of input ``x`` (B, N)."""
    return LIFState(torch.full_like(x, p.v_rest))


def lif_step(
    x: Tensor, state: LIFState, p: LIFParams, spike_fn: Surrogate
) -> tuple[Tensor, LIFState]:
    """One LIF step on input current ``x`` (B, N); returns spikes (B, N) and the new state."""
    u = p.v_rest + p.beta * (state.v - p.v_rest) + x
    s = spike_fn(u - p.v_threshold)
    r = s.detach() if p.detach_reset else s
    if p.reset == "subtract":
        v = u - p.v_threshold * r
    else:
        v = u * (1 - r) + p.v_reset * r
    return s, LIFState(v)


def li_step(x: Tensor, state: LIFState, p: LIFParams) -> tuple[Tensor, LIFState]:
    """One leaky-integrator step: ``v = v_rest + beta (v - v_rest) + x``; returns (v, state)."""
    v = p.v_rest + p.beta * (state.v - p.v_rest) + x
    return v, LIFState(v)


def decay_matrix(beta: float, steps: int, like: Tensor) -> Tensor:
    """``M[t', t] = beta**(t' - t)`` for ``t' >= t``: a causal exponential filter as a matmul."""
    t = torch.arange(steps, device=like.device, dtype=like.dtype)
    diff = t[:, None] - t[None, :]
    return torch.where(diff >= 0, beta ** diff.clamp(min=0), torch.zeros((), dtype=like.dtype))


def li_sequence(current: Tensor, p: LIFParams, steps: int | None = None) -> Tensor:
    """LI membranes (B, T, N) for a current (B, T, N), or (B, N) held for ``steps``."""
    if current.dim() == 2:  # constant current: closed form of the geometric sum
        assert steps is not None, "a (B, N) current needs steps"
        k = torch.arange(1, steps + 1, device=current.device, dtype=current.dtype)
        beta = torch.as_tensor(p.beta, dtype=current.dtype, device=current.device)
        # (T, 1) or (T, N) for a per-neuron beta: sum_{j<k} beta^j
        gain = (1 - beta ** k[:, None]) / (1 - beta)
        return p.v_rest + current[:, None, :] * gain
    if isinstance(p.beta, Tensor):  # learnable tau: the plain loop keeps autograd exact
        state, out = lif_init(current[:, 0], p), []
        for t in range(current.shape[1]):
            v, state = li_step(current[:, t], state, p)
            out.append(v)
        return torch.stack(out, 1)
    m = decay_matrix(p.beta, current.shape[1], current)  # (T, T), M[t, s] = beta^(t-s)
    return p.v_rest + m @ current  # broadcast over B: (T, T) @ (B, T, N)


class _FusedLIF(torch.autograd.Function):
    """LIF over all T steps with a hand-written BPTT (constant beta and threshold).

    Internally time-major (T, B, N) so every step touches contiguous memory; the loop does
    only what the recurrence needs (integrate, threshold, reset) and everything that can be
    computed for all steps at once (spike tensor, membranes, surrogate derivative) is.
    """

    @staticmethod
    def forward(ctx, current: Tensor, steps: int, p: LIFParams, spike_fn: Surrogate):  # type: ignore[override]
        const = current.dim() == 2
        b, n = current.shape[0], current.shape[-1]
        drive = current + (1 - p.beta) * p.v_rest  # fold the rest term into the input once
        if not const:
            drive = drive.transpose(0, 1)
        u_all = current.new_empty(steps, b, n)  # pre-reset membranes
        s_all = torch.empty_like(u_all)
        v_all = torch.empty_like(u_all)
        v = torch.full((b, n), p.v_rest, dtype=current.dtype, device=current.device)
        theta, beta = float(p.v_threshold), float(p.beta)
        for t in range(steps):
            u = torch.add(drive if const else drive[t], v, alpha=beta, out=u_all[t])
            s = torch.ge(u, theta, out=s_all[t])
            if p.reset == "subtract":
                v = torch.sub(u, s, alpha=theta, out=v_all[t])
            else:
                v = v_all[t].copy_(u).masked_fill_(s.bool(), p.v_reset)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros
        ctx.save_for_backward(u_all, s_all)
        ctx.const, ctx.p, ctx.spike_fn = const, p, spike_fn
        return s_all.transpose(0, 1), v_all.transpose(0, 1)

    @staticmethod
    def backward(ctx, g_s: Tensor | None, g_v: Tensor | None):  # type: ignore[override]
        u_all, s_all = ctx.saved_tensors  # (T, B, N)
        p: LIFParams = ctx.p
        theta = float(p.v_threshold)
        # the surrogate derivative for all T at once, in place: the bulk of the maths
        sg = ctx.spike_fn.derivative_(u_all - theta)
        g_s = g_s.transpose(0, 1) if g_s is not None else torch.zeros_like(sg)
        # the reset paths below still need sg itself; the default one may overwrite it
        direct = sg.mul_(g_s) if p.detach_reset else sg * g_s
        g_v = g_v.transpose(0, 1) if g_v is not None else None
        steps = u_all.shape[0]
        if p.reset == "subtract" and p.detach_reset:
            # g_u[t] = (g_v[t] + g_s[t] sg[t]) + beta g_u[t+1]: a reverse exponential filter,
            # i.e. one (T, T) @ (T, B*N) matmul instead of a loop.
            d = direct.add_(g_v) if g_v is not None else direct
            m = decay_matrix(float(p.beta), steps, u_all)  # M[t', t] = beta^(t'-t)
            g_u = (m.T @ d.reshape(steps, -1)).view_as(u_all)
        else:
            g_u = torch.empty_like(u_all)
            carry = torch.zeros_like(u_all[0])
            for t in range(steps - 1, -1, -1):
                gv = g_v[t] + carry if g_v is not None else carry
                if p.reset == "subtract":
                    gu = gv + direct[t]
                    if not p.detach_reset:
                        gu = gu - theta * gv * sg[t]
                else:
                    gu = gv * (1 - s_all[t]) + direct[t]
                    if not p.detach_reset:
                        gu = gu + gv * (p.v_reset - u_all[t]) * sg[t]
                g_u[t] = gu
                carry = p.beta * gu
        g_current = g_u.sum(0) if ctx.const else g_u.transpose(0, 1)
        return g_current, None, None, None


def _transformed() -> bool:
    """Whether torch.compile or a torch.func transform (vmap, grad) is tracing this call."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def lif_sequence(
    current: Tensor, p: LIFParams, spike_fn: Surrogate, steps: int | None = None
) -> tuple[Tensor, Tensor]:
    """Spikes and membranes (B, T, N) of LIF neurons driven by ``current``.

    ``current`` is (B, T, N), or (B, N) for a current that is the same at every step
    (then ``steps`` gives T). Learnable ``beta``/``v_threshold`` (tensors) take the autograd
    step loop, as does torch.compile; otherwise the fused loop with hand-written BPTT runs.
    """
    const = current.dim() == 2
    if const and steps is None:
        raise ValueError("lif_sequence: a (B, N) constant current needs `steps`")
    n_steps = steps if const else current.shape[1]
    assert n_steps is not None
    fixed = not isinstance(p.beta, Tensor) and not isinstance(p.v_threshold, Tensor)
    # torch.compile traces the plain step loop (and fuses it), as does torch.func.vmap
    # (the fused Functions write into preallocated buffers); eager runs the fused Function.
    if fixed and not _transformed():
        s, v = _FusedLIF.apply(current, n_steps, p, spike_fn)
        return s, v
    return lif_step_loop(current, p, spike_fn, n_steps, const)


def lif_step_loop(
    current: Tensor, p: LIFParams, spike_fn: Surrogate, steps: int, const: bool
) -> tuple[Tensor, Tensor]:
    """The reference: ``lif_step`` T times under autograd; time is dim 1 unless ``const``."""
    state = lif_init(current if const else current[:, 0], p)
    spikes, mems = [], []
    for t in range(steps):
        s, state = lif_step(current if const else current[:, t], state, p, spike_fn)
        spikes.append(s)
        mems.append(state.v)
    return torch.stack(spikes, 1), torch.stack(mems, 1)


class _FusedRecurrentLIF(torch.autograd.Function):
    """Recurrent LIF, ``I[t] = drive[t] + s[t-1] @ W.T``, with a hand-written BPTT.

    ``beta`` is a tensor, () or per neuron (N,), and may be learnable (learn_tau): its
    gradient is ``sum_t g_u[t] (v[t-1] - v_rest)``, one reduction after the loop.
    """

    @staticmethod
    def forward(ctx, drive: Tensor, w: Tensor, beta: Tensor, steps: int, p: LIFParams,  # type: ignore[override]
                spike_fn: Surrogate):  # fmt: skip
        const = drive.dim() == 2
        b, n = drive.shape[0], drive.shape[-1]
        d = drive + (1 - beta) * p.v_rest
        if not const:
            d = d.transpose(0, 1)
        theta = float(p.v_threshold)
        u_all = drive.new_empty(steps, b, n)
        s_all = drive.new_zeros(steps, b, n)
        v = torch.full((b, n), p.v_rest, dtype=drive.dtype, device=drive.device)
        s = torch.zeros_like(v)
        wt = w.t()
        for t in range(steps):
            u = torch.addmm(d if const else d[t], s, wt, out=u_all[t])
            u.addcmul_(v, beta)
            s = torch.ge(u, theta, out=s_all[t])
            if p.reset == "subtract":
                v = torch.sub(u, s, alpha=theta)
            else:
                v = u.masked_fill(s.bool(), p.v_reset)
        v_all = (
            torch.sub(u_all, s_all, alpha=theta)
            if p.reset == "subtract"
            else u_all.masked_fill(s_all.bool(), p.v_reset)
        )
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(u_all, s_all, v_all, w, beta)
        ctx.const, ctx.p, ctx.spike_fn = const, p, spike_fn
        return s_all.transpose(0, 1), v_all.transpose(0, 1)

    @staticmethod
    def backward(ctx, g_s: Tensor | None, g_v: Tensor | None):  # type: ignore[override]
        u_all, s_all, v_all, w, beta = ctx.saved_tensors
        p: LIFParams = ctx.p
        theta = float(p.v_threshold)
        sg = ctx.spike_fn.derivative_(u_all - theta)
        g_s = g_s.transpose(0, 1) if g_s is not None else torch.zeros_like(u_all)
        g_v = g_v.transpose(0, 1) if g_v is not None else torch.zeros_like(u_all)
        g_u = torch.empty_like(u_all)
        gu_next = torch.zeros_like(u_all[0])
        for t in range(u_all.shape[0] - 1, -1, -1):
            gs = torch.addmm(g_s[t], gu_next, w)  # s[t] drives u[t+1] through W
            gv = torch.addcmul(g_v[t], gu_next, beta)
            if p.reset == "subtract":
                gu = gv + gs * sg[t]
                if not p.detach_reset:
                    gu = gu - theta * gv * sg[t]
            else:
                gu = gv * (1 - s_all[t]) + gs * sg[t]
                if not p.detach_reset:
                    gu = gu + gv * (p.v_reset - u_all[t]) * sg[t]
            g_u[t] = gu
            gu_next = gu
        # dL/dW = sum_t g_u[t]^T s[t-1]: one matmul over all steps
        n = w.shape[0]
        g_w = g_u[1:].reshape(-1, n).t() @ s_all[:-1].reshape(-1, n)
        g_drive = g_u.sum(0) if ctx.const else g_u.transpose(0, 1)
        g_beta = None
        if ctx.needs_input_grad[2]:  # u[t] = v_rest + beta (v[t-1] - v_rest) + ...
            g_beta = (g_u[1:] * (v_all[:-1] - p.v_rest)).sum((0, 1))
            g_beta = g_beta.sum() if beta.dim() == 0 else g_beta
        return g_drive, g_w, g_beta, None, None, None


def rlif_sequence(
    drive: Tensor, w_rec: Tensor, p: LIFParams, spike_fn: Surrogate, steps: int | None = None
) -> tuple[Tensor, Tensor]:
    """Recurrent LIF: spikes and membranes (B, T, N) for ``I[t] = drive[t] + W_rec s[t-1]``.

    ``drive`` is (B, T, N), or (B, N) held for ``steps``; ``w_rec`` is (N, N). The fused
    loop with hand-written BPTT handles fixed or learnable ``beta``; a learnable threshold
    (and torch.compile) takes the autograd step loop.
    """
    const = drive.dim() == 2
    n_steps = steps if const else drive.shape[1]
    if n_steps is None:
        raise ValueError("rlif_sequence: a (B, N) constant drive needs `steps`")
    if not isinstance(p.v_threshold, Tensor) and not _transformed():
        beta = torch.as_tensor(p.beta, dtype=drive.dtype, device=drive.device)
        s, v = _FusedRecurrentLIF.apply(drive, w_rec, beta, n_steps, p, spike_fn)
        return s, v
    state = lif_init(drive if const else drive[:, 0], p)
    s = torch.zeros_like(state.v)
    spikes, mems = [], []
    for t in range(n_steps):
        s, state = lif_step((drive if const else drive[:, t]) + s @ w_rec.t(), state, p, spike_fn)
        spikes.append(s)
        mems.append(state.v)
    return torch.stack(spikes, 1), torch.stack(mems, 1)
