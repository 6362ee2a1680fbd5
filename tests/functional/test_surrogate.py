"""Surrogates: hard threshold forward, the named derivative backward (checked by autograd)."""

import pytest
import torch

from spikeopt.config import ConfigError
from spikeopt.functional.surrogate import SURROGATES, get_surrogate


@pytest.mark.parametrize("name", SURROGATES)
@pytest.mark.parametrize("alpha", [None, 0.7, 3.0])
def test_derivative_matches_autograd_of_smooth_form(name, alpha):
    fn = get_surrogate(name, alpha)
    # avoid the kinks of boxcar/triangle where the derivative is not defined
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    x = x[(x.abs() - 0.5 / fn.alpha).abs() > 1e-3]
    x = x[((x * fn.alpha).abs() - 1).abs() > 1e-3].requires_grad_(True)
    (auto,) = torch.autograd.grad(fn.smooth(x).sum(), x)
    torch.testing.assert_close(fn.derivative(x.detach()), auto)


@pytest.mark.parametrize("name", SURROGATES)
def test_forward_is_heaviside_backward_is_derivative(name):
    fn = get_surrogate(name)
    x = torch.tensor([-1.0, -0.1, 0.0, 0.1, 1.0], requires_grad=True)
    s = fn(x)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    (g,) = torch.autograd.grad(s.sum(), x)
    torch.testing.assert_close(g, fn.derivative(x.detach()))


@pytest.mark.parametrize("name", SURROGATES)
def test_smooth_step_goes_from_zero_to_one(name):
    fn = get_surrogate(name)
    ends = fn.smooth(torch.tensor([-1e3, 1e3], dtype=torch.float64))
    torch.testing.assert_close(
        ends, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=2e-3, rtol=0
    )


def test_unknown_surrogate_lists_valid_names():
    with pytest.raises(ConfigError, match="valid: sigmoid, fast_sigmoid, arctan, boxcar, triangle"):
        get_surrogate("sigmoidd")
