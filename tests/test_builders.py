"""User builders: the model-output contract check and a user model/data/metric in the loop."""

import dataclasses

import pytest
import torch
from torch import nn

from spikeopt import api
from spikeopt.builders import Builders, check_output
from spikeopt.config import ConfigError
from spikeopt.tasks.datasets import load_dataset
from spikeopt.train.loop import train


def test_contract_errors_name_what_is_wrong():
    s, v = torch.zeros(4, 5, 3), torch.zeros(4, 5, 3)
    check_output(([s], [v]), 4, 5, 3)  # the contract itself passes
    cases = [
        (s, "got a tensor of shape \\(4, 5, 3\\)"),
        (([s],), "got a tuple"),
        ((s, [v]), "spikes_list is a tensor"),
        (([s, s], [v]), "2 spike tensors but 1 membrane"),
        (([s], [v.numpy()]), "layer 0 membranes is a ndarray"),
        (([s.transpose(0, 1)], [v]), r"layer 0 spikes has shape \(5, 4, 3\), expected \(B=4, T=5"),
        (([s], [v[..., :2]]), r"spikes \(4, 5, 3\) and membranes \(4, 5, 2\) differ"),
        (([s[..., :2]], [v[..., :2]]), "readout\\) layer has 2 neurons, expected 3"),
    ]
    for output, match in cases:
        with pytest.raises(ConfigError, match=match):
            check_output(output, 4, 5, 3)


class Linear(nn.Module):
    """A user model: one linear leaky-integrator readout, spikes at threshold 1."""

    def __init__(self, n_in: int, n_out: int, time_major: bool = False) -> None:
        super().__init__()
        self.fc, self.time_major = nn.Linear(n_in, n_out), time_major

    def forward(self, x):
        v = torch.cumsum(self.fc(x.flatten(2)), dim=1) / x.shape[1]
        if self.time_major:  # the classic mistake: (T, B, N)
            v = v.transpose(0, 1)
        return [(v > 1).float()], [v]


TINY = {"encoder.steps": 4, "trainer.epochs": 2, "trainer.progress": False, "data.n_test": 300,
        "loss.name": "ce_mean", "optim.lr": 0.03}  # fmt: skip


def test_user_model_data_and_metrics_train_in_the_loop(tmp_path):
    def model(cfg, shape, n_classes):
        return Linear(64, n_classes * cfg.model.neurons_per_class)

    def data(cfg):  # a user dataset: digits with a smaller training set
        d = load_dataset(cfg.data)
        return dataclasses.replace(d, x_train=d.x_train[:800], y_train=d.y_train[:800])

    def metrics(exp):
        return {"weight_norm": float(exp.model.fc.weight.detach().norm())}

    b = Builders(model=model, data=data, metrics=metrics)
    cfg = api.resolve("digits-mlp-surrogate", TINY)
    summary = train(cfg, tmp_path / "ok", quiet=True, builders=b)
    assert summary["n_params"] == 64 * 10 + 10 and summary["test_acc"] > 0.6  # it learns
    assert "weight_norm" in (tmp_path / "ok" / "metrics.csv").read_text().splitlines()[0]

    def bad(cfg, shape, n_classes):
        return Linear(64, n_classes, time_major=True)

    with pytest.raises(ConfigError, match=r"expected \(B=2, T=4, N\) -- batch first"):
        train(cfg, tmp_path / "bad", quiet=True, builders=Builders(model=bad))
    assert not (tmp_path / "bad").exists()  # fails before anything is written


def test_a_user_policy_trains_in_the_control_loop(tmp_path):
    def policy(cfg, shape, n_actions):
        assert shape == (2,)  # chemotaxis observations, encoded as policy.* says
        return Linear(shape[0], n_actions)

    over = {"env.preset": "tiny", "encoder.steps": 4, "rl.episodes": 4, "rl.eval_episodes": 2,
            "rl.baseline_episodes": 2, "trainer.progress": False}  # fmt: skip
    cfg = api.resolve("nav-reinforce", over)
    rows: list = []
    summary = train(cfg, tmp_path / "ok", quiet=True, callbacks=[rows.append],
                    builders=Builders(model=policy))  # fmt: skip
    assert summary["n_params"] == 2 * 4 + 4 and summary["episodes"] == 4 and len(rows) == 4
    assert all(r["loss"] == r["loss"] for r in rows)  # REINFORCE stepped the user's policy

    def wide(cfg, shape, n_actions):
        return Linear(shape[0], n_actions + 1)

    with pytest.raises(ConfigError, match="readout\\) layer has 5 neurons, expected 4"):
        train(cfg, tmp_path / "bad", quiet=True, builders=Builders(model=wide))
    with pytest.raises(ConfigError, match="Builders.data and Builders.loss"):
        train(cfg, tmp_path / "bad", quiet=True, builders=Builders(data=lambda c: None))
    assert not (tmp_path / "bad").exists()  # fails before anything is written
