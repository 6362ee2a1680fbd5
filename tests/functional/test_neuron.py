"""LIF / LI dynamics: golden trajectories, and the fused BPTT against the autograd step loop."""

import math

import pytest
import torch

from spikeopt.functional.neuron import (
    LIFParams,
    beta_from_tau,
    li_sequence,
    li_step,
    lif_init,
    lif_sequence,
    lif_step,
    lif_step_loop,
    rlif_sequence,
)
from spikeopt.functional.surrogate import get_surrogate

FN = get_surrogate("fast_sigmoid")


def test_golden_trajectory_subtract_reset():
    # beta 0.5, constant input 0.6: u = 0.6, 0.9, 1.05 -> spike, v = 0.05, u = 0.625, ...
    p = LIFParams(beta=0.5, v_threshold=1.0, reset="subtract")
    s, v = lif_sequence(torch.tensor([[0.6]]), p, FN, steps=5)
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    torch.testing.assert_close(v.flatten(), torch.tensor([0.6, 0.9, 0.05, 0.625, 0.9125]))


def test_golden_trajectory_zero_reset_with_rest_and_reset_values():
    # v_rest 0.2: u = 0.2 + 0.5 (v - 0.2) + x; reset to v_reset = -0.1
    p = LIFParams(beta=0.5, v_threshold=1.0, v_reset=-0.1, v_rest=0.2, reset="zero")
    x = torch.tensor([[[0.9], [0.5], [0.0], [1.2]]])
    s, v = lif_sequence(x, p, FN)
    assert s.flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    # u0 = 0.2 + 0 + 0.9 = 1.1 -> spike, v = -0.1; u1 = 0.2 + 0.5*(-0.3) + 0.5 = 0.55;
    # u2 = 0.2 + 0.5*0.35 = 0.375; u3 = 0.2 + 0.5*0.175 + 1.2 = 1.4875 -> spike, v = -0.1
    torch.testing.assert_close(v.flatten(), torch.tensor([-0.1, 0.55, 0.375, -0.1]))


def test_golden_li_trajectory_matches_closed_form():
    p = LIFParams(beta=0.9)
    v = li_sequence(torch.ones(1, 1), p, steps=4).flatten()
    expected = torch.tensor([sum(0.9**j for j in range(k)) for k in range(1, 5)])
    torch.testing.assert_close(v, expected)


def test_beta_from_tau():
    assert beta_from_tau(20.0, 1.0) == pytest.approx(math.exp(-1 / 20))
    assert beta_from_tau(torch.tensor([10.0]), 2.0).item() == pytest.approx(math.exp(-0.2))


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("const", [True, False])
def test_fused_bptt_equals_autograd_step_loop(reset, detach, const):
    torch.manual_seed(0)
    p = LIFParams(
        beta=0.85, v_threshold=1.0, v_reset=0.1, v_rest=0.05, reset=reset, detach_reset=detach
    )
    steps = 9
    shape = (5, 7) if const else (5, steps, 7)
    cur = (torch.randn(shape, dtype=torch.float64) * 0.8 + 0.4).requires_grad_(True)
    s1, v1 = lif_sequence(cur, p, FN, steps)
    s2, v2 = lif_step_loop(cur, p, FN, steps, const)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(v1, v2)
    w_s, w_v = torch.randn_like(s1), torch.randn_like(v1)
    (g1,) = torch.autograd.grad((s1 * w_s).sum() + (v1 * w_v).sum(), cur)
    (g2,) = torch.autograd.grad((s2 * w_s).sum() + (v2 * w_v).sum(), cur)
    torch.testing.assert_close(g1, g2)
    assert s1.mean() > 0.05  # the comparison exercised spikes and resets


def test_li_sequence_equals_step_loop_and_learnable_beta_has_gradient():
    torch.manual_seed(1)
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    p = LIFParams(beta=0.8, v_rest=0.1)
    state, out = lif_init(x[:, 0], p), []
    for t in range(6):
        v, state = li_step(x[:, t], state, p)
        out.append(v)
    torch.testing.assert_close(li_sequence(x, p), torch.stack(out, 1))
    beta = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    li_sequence(x, p._replace(beta=beta)).sum().backward()
    assert beta.grad is not None and torch.isfinite(beta.grad)


def test_learnable_threshold_uses_autograd_path():
    theta = torch.full((4,), 1.0, requires_grad=True)
    p = LIFParams(beta=0.9, v_threshold=theta)
    s, _ = lif_sequence(torch.full((2, 4), 0.4), p, FN, steps=6)
    s.sum().backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0


def test_constant_current_needs_steps():
    with pytest.raises(ValueError, match="needs `steps`"):
        lif_sequence(torch.zeros(2, 3), LIFParams(), FN)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("const", [True, False])
def test_fused_recurrent_lif_equals_autograd_step_loop(reset, detach, const):
    torch.manual_seed(2)
    p = LIFParams(beta=0.8, v_reset=-0.1, v_rest=0.05, reset=reset, detach_reset=detach)
    steps, n = 8, 6
    drive = torch.randn((4, n) if const else (4, steps, n), dtype=torch.float64) * 0.7 + 0.5
    drive.requires_grad_(True)
    w = (torch.randn(n, n, dtype=torch.float64) * 0.5).requires_grad_(True)
    s1, v1 = rlif_sequence(drive, w, p, FN, steps)
    state = lif_init(drive if const else drive[:, 0], p)
    s, ss, vs = torch.zeros_like(state.v), [], []
    for t in range(steps):
        s, state = lif_step((drive if const else drive[:, t]) + s @ w.t(), state, p, FN)
        ss.append(s)
        vs.append(state.v)
    s2, v2 = torch.stack(ss, 1), torch.stack(vs, 1)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(v1, v2)
    ws, wv = torch.randn_like(s1), torch.randn_like(v1)
    g1 = torch.autograd.grad((s1 * ws).sum() + (v1 * wv).sum(), (drive, w))
    g2 = torch.autograd.grad((s2 * ws).sum() + (v2 * wv).sum(), (drive, w))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    assert 0.05 < s1.mean() < 0.95


def test_fused_recurrent_learnable_beta_gradient_matches_autograd():
    torch.manual_seed(3)
    steps, n = 7, 5
    drive = torch.randn(3, steps, n, dtype=torch.float64) * 0.6 + 0.5
    w = torch.randn(n, n, dtype=torch.float64) * 0.4
    beta = torch.full((n,), 0.7, dtype=torch.float64).requires_grad_(True)
    p = LIFParams(beta=beta, v_rest=0.1)
    s1, v1 = rlif_sequence(drive, w, p, FN)
    (g1,) = torch.autograd.grad(s1.sum() + v1.pow(2).sum(), beta)
    state = lif_init(drive[:, 0], p)
    s, ss, vs = torch.zeros_like(state.v), [], []
    for t in range(steps):
        s, state = lif_step(drive[:, t] + s @ w.t(), state, p, FN)
        ss.append(s)
        vs.append(state.v)
    (g2,) = torch.autograd.grad(torch.stack(ss).sum() + torch.stack(vs).pow(2).sum(), beta)
    torch.testing.assert_close(g1, g2)


def test_li_constant_current_with_per_neuron_beta():
    beta = torch.tensor([0.5, 0.9], dtype=torch.float64)
    v = li_sequence(torch.ones(1, 2, dtype=torch.float64), LIFParams(beta=beta), steps=3)
    expected = torch.tensor([[1.0, 1.0], [1.5, 1.9], [1.75, 2.71]], dtype=torch.float64)
    torch.testing.assert_close(v[0], expected)
