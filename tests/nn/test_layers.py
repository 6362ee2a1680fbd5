"""Layer details the model-level tests do not pin down."""

import pytest
import torch
import torch.nn.functional as F

from spikeopt.config import NeuronConfig
from spikeopt.nn.layers import ConvLIF


@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("width", [8, 9])
def test_one_dimensional_pooling_equals_the_pool_op(pool, width):
    layer = ConvLIF(1, 3, 3, NeuronConfig(), pool, "none", (1, width))
    s = torch.rand(2, 4, 3, 1, width, dtype=torch.float64, requires_grad=True)  # (B, T, C, 1, W)
    out = layer.pool_out(s)
    op = F.avg_pool2d if pool == "avg" else F.max_pool2d
    expected = op(s.flatten(0, 1), (1, 2)).view(2, 4, 3, 1, width // 2)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, s, g)
    (expected_grad,) = torch.autograd.grad(expected, s, g)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)
