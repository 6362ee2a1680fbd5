"""The population-method base: sigma schedules, the update cap, and every method on it."""

import pytest
import torch

from spikeopt.config import ESConfig
from spikeopt.methods.strategy import cap_update, sigma_at


def test_sigma_schedules():
    assert sigma_at(500, ESConfig(sigma=0.1)) == 0.1
    exp = ESConfig(sigma=0.1, sigma_schedule="exponential", sigma_decay=0.5, sigma_floor=0.02)
    assert [sigma_at(s, exp) for s in (0, 1, 2, 3)] == pytest.approx([0.1, 0.05, 0.025, 0.02])
    lin = ESConfig(sigma=0.1, sigma_schedule="linear", sigma_steps=4, sigma_floor=0.02)
    assert [sigma_at(s, lin) for s in (0, 2, 4, 9)] == pytest.approx([0.1, 0.06, 0.02, 0.02])


def test_cap_update_scales_the_applied_change_only():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    before = [torch.zeros(2)]
    assert cap_update([p], before, 1.0) == pytest.approx(1.0)
    assert torch.allclose(p.detach(), torch.tensor([0.6, 0.8]))
    assert cap_update([p], before, 0.0) == pytest.approx(1.0)  # 0 = off: untouched
