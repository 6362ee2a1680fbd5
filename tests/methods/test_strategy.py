"""The population-method base: sigma schedules, the update cap, and every method on it."""

import csv
import json
import math

import pytest
import torch

from spikeopt import api
from spikeopt.config import ConfigError, ESConfig
from spikeopt.methods import METHODS
from spikeopt.methods.strategy import cap_update, sigma_at
from tests.helpers import CONTROL_TINY


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


# Every registered method through the same smoke test, on every task it says it can train.
CASES = [(name, kind) for name, cls in sorted(METHODS.items()) for kind in cls.tasks]
TINY = {
    "classification": ("digits-es", {"es.population": 8, "model.hidden": [16],
                                      "encoder.steps": 4, "trainer.epochs": 1,
                                      "trainer.steps_per_epoch": 2, "data.batch_size": 32,
                                      "data.n_test": 50, "guided.warmup_steps": 1}),
    "control": ("nav-es", {**CONTROL_TINY, "es.population": 8, "rl.episodes": 2,
                           "rl.generations": 2, "rl.baseline_episodes": 0,
                           "rl.eval_episodes": 1, "trainer.task": "control"}),
    "language": ("language-gru", {"trainer.epochs": 1, "trainer.steps_per_epoch": 2,
                                  "lang.seq_len": 16, "lang.sample_chars": 10}),
}  # fmt: skip
# conversion trains the ReLU ANN (a 64-16-10 MLP) and converts it after the last epoch
ANN = {"model.arch": "cnn", "model.channels": [], "loss.name": "ce_mean",
       "conversion.timesteps": [4], "conversion.batches": 1}  # fmt: skip


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_every_method_trains_every_task_it_lists(name, kind, tmp_path):
    recipe, over = TINY[kind]
    over = {**over, "method.name": name, "trainer.progress": False}
    if name == "conversion":
        over.update(ANN)
    summary = api.run(recipe, over, out=tmp_path / "run", quiet=True)
    assert summary["method"] == name and summary["iterations"] >= 1
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert rows and all(math.isfinite(float(r["wall_s"])) for r in rows)
    fit = "train_fit_mean" if kind in ("classification", "language") else "fit_mean"
    assert (fit in rows[0]) == METHODS[name].population  # population statistics, if any
    if kind == "language":  # bits per character and the sampled text
        assert math.isfinite(summary["test_bpc"]) and (tmp_path / "run" / "samples.txt").exists()
        return
    if name == "conversion":  # the SNN made from the ANN, scored at T = 4
        assert 0 <= summary["acc_T4"] <= 1 and (tmp_path / "run" / "snn" / "best.pt").exists()
    elif kind == "classification":  # the energy proxy of the final model (tasks/energy.py)
        saved = json.loads((tmp_path / "run" / "summary.json").read_text())
        for key in (
            "synops_per_sample",
            "dense_macs_per_sample",
            "dense_macs_per_step",
            "synops/layers.0.fc",
            "dense_macs/layers.1.fc",
            "sparsity/layer0",
        ):
            assert math.isfinite(saved[key]) and saved[key] >= 0, key
        assert saved["dense_macs_per_sample"] == (64 * 16 + 16 * 10) * 4  # 64 -> 16 -> 10, T=4


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_refuses_the_tasks_it_does_not_list(name):
    other = [k for k in TINY if k not in METHODS[name].tasks]
    for kind in other:
        recipe, over = TINY[kind]
        with pytest.raises(ConfigError, match="method.name"):
            api.run(recipe, {**over, "method.name": name}, quiet=True)
