"""Readouts and losses keep leading (population) axes and agree with torch's reference."""

import pytest
import torch
import torch.nn.functional as F

from spikeopt.config import ConfigError, LossConfig
from spikeopt.functional.loss import LOSSES, count_scores, cross_entropy, make_loss, mse_rate


def test_cross_entropy_matches_torch_and_keeps_leading_axes():
    torch.manual_seed(0)
    scores = torch.randn(3, 8, 5)
    y = torch.randint(0, 5, (8,))
    per_member = cross_entropy(scores, y)
    assert per_member.shape == (3,)
    for i in range(3):
        torch.testing.assert_close(per_member[i], F.cross_entropy(scores[i], y))


def test_population_coding_sums_each_class_group():
    spikes = torch.zeros(1, 4, 6)  # 3 classes x 2 neurons
    spikes[0, :, 4] = 1  # class 2, first neuron fires at every step
    spikes[0, :2, 1] = 1  # class 0, second neuron fires twice
    assert count_scores(spikes, 2).tolist() == [[2.0, 0.0, 4.0]]


def test_mse_rate_targets():
    scores = torch.tensor([[4.0, 0.0]])  # counts over T = 4
    assert mse_rate(scores, torch.tensor([0]), 4).item() == pytest.approx(0.0)
    assert mse_rate(scores, torch.tensor([1]), 4).item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_finite_and_differentiable(name):
    torch.manual_seed(0)
    loss = make_loss(LossConfig(name=name, rate_reg=0.1), neurons_per_class=2)
    mem = torch.randn(4, 5, 6, requires_grad=True)
    spikes = [torch.rand(4, 5, 3).round(), (mem > 0).float() + mem - mem.detach()]
    value, scores = loss(spikes, [torch.randn(4, 5, 3), mem], torch.tensor([0, 1, 2, 0]))
    assert scores.shape == (4, 3) and torch.isfinite(value)
    value.backward()
    assert mem.grad is not None


def test_unknown_loss_lists_names():
    with pytest.raises(ConfigError, match="loss.name"):
        make_loss(LossConfig(name="hinge"))
