"""Layer details the model-level tests do not pin down."""

import pytest
import torch
import torch.nn.functional as F

from spikeopt.config import NeuronConfig
from spikeopt.nn.layers import ConvLIF


@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("hw", [(1, 8), (1, 9), (6, 8), (7, 5)])
def test_pooling_equals_the_pool_op(pool, hw):
    """Average pooling is computed from strided views: same values and gradients as the op."""
    layer = ConvLIF(1, 3, 3, NeuronConfig(), pool, "none", hw)
    s = torch.rand(2, 4, 3, *hw, dtype=torch.float64)  # (B, T, C, H, W)
    s = (s < 0.3).double() if pool == "max" else s  # spikes: ties everywhere
    s.requires_grad_(True)
    out = layer.pool_out(s)
    op = F.avg_pool2d if pool == "avg" else F.max_pool2d
    window = (1, 2) if hw[0] == 1 else (2, 2)
    expected = op(s.flatten(0, 1), window).unflatten(0, (2, 4))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, s, g)
    (expected_grad,) = torch.autograd.grad(expected, s, g)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)
