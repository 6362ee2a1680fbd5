"""The S5-style layer: its scan and output equal a step-by-step reference; ZOH in closed form."""

import torch

from spikeopt.nn.ssm import S5Block, S5Layer, diagonal_scan


def test_scan_equals_the_sequential_recurrence():
    torch.manual_seed(0)
    a = torch.complex(torch.rand(5) * 0.9, torch.rand(5) * 0.2)
    b = torch.randn(3, 13, 5, dtype=torch.complex64)
    x, ref, state = diagonal_scan(a, b), [], torch.zeros(3, 5, dtype=torch.complex64)
    for t in range(13):
        state = a * state + b[:, t]
        ref.append(state)
    torch.testing.assert_close(x, torch.stack(ref, 1))


def test_layer_equals_a_step_by_step_reference_with_zoh_in_closed_form():
    torch.manual_seed(1)
    layer = S5Layer(width=3, states=4)
    lam = torch.complex(-torch.exp(layer.log_neg_re), layer.im).detach()
    dt = torch.exp(layer.log_step).detach()
    lam_bar, b_bar = layer.discrete()
    # zero-order hold: exp(lam dt), and B_bar = lam^-1 (exp(lam dt) - 1) B
    torch.testing.assert_close(lam_bar.detach(), torch.exp(lam * dt))
    b = torch.view_as_complex(layer.b).detach()
    torch.testing.assert_close(b_bar.detach(), ((torch.exp(lam * dt) - 1) / lam)[:, None] * b)
    u = torch.randn(2, 6, 3)
    c = torch.view_as_complex(layer.c).detach()
    x, ys = torch.zeros(2, 4, dtype=torch.complex64), []
    for t in range(6):
        x = lam_bar.detach() * x + u[:, t].to(torch.complex64) @ b_bar.detach().T
        ys.append((x @ c.T).real + layer.d.detach() * u[:, t])
    torch.testing.assert_close(layer(u).detach(), torch.stack(ys, 1), rtol=1e-5, atol=1e-5)


def test_stable_and_causal_with_gradients_for_every_parameter():
    torch.manual_seed(2)
    block = S5Block(8, 16)
    assert bool((block.ssm.discrete()[0].abs() < 1).all())  # a stable recurrence
    u = torch.randn(2, 10, 8)
    y = block(u)
    changed = u.clone()
    changed[:, 6:] += 1.0
    torch.testing.assert_close(block(changed)[:, :6], y[:, :6])  # the future never leaks back
    y.sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in block.parameters())
