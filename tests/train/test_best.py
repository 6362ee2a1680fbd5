"""best.pt: the model of the epoch with the best task.metric, kept exactly across a resume."""

import math
from pathlib import Path

import pytest
import torch

from spikeopt import api
from spikeopt.config import Config, apply
from spikeopt.train.experiment import build
from spikeopt.train.loop import BEST, _save_best
from tests.helpers import Crash, crash_after

FAST = {"encoder.steps": 4, "model.hidden": [32], "trainer.steps_per_epoch": 3,
        "trainer.progress": False, "data.n_train": 200, "data.n_test": 100}  # fmt: skip


def test_only_a_better_epoch_replaces_best_pt(tmp_path: Path) -> None:
    """Epoch values 0.5, 0.4, 0.6, 0.6: best.pt is written at epochs 1 and 3 only (the first
    of equal epochs wins, as best_test_acc does), and holds the model at that moment."""
    exp = build(apply(Config(), FAST))
    best, saved = -math.inf, []
    for epoch, value in enumerate([0.5, 0.4, 0.6, 0.6]):
        with torch.no_grad():
            exp.model.layers[0].fc.bias.fill_(float(epoch))
        best = _save_best(
            tmp_path, exp, [{"epoch": epoch + 1, "test_acc": value}], best, epoch, "r"
        )
        ck = torch.load(tmp_path / BEST, weights_only=True)
        saved.append((ck["epoch"], ck["value"], float(ck["model"]["layers.0.fc.bias"][0])))
    assert saved == [(1, 0.5, 0.0), (1, 0.5, 0.0), (3, 0.6, 2.0), (3, 0.6, 2.0)]
    assert best == 0.6


def test_a_resumed_run_ends_with_the_same_best_pt(tmp_path: Path) -> None:
    """Killed after epoch 2 and resumed, a run's best.pt is the uninterrupted run's, bit for
    bit, and names the summary's best epoch."""
    over = {**FAST, "trainer.epochs": 4}
    whole = api.run("digits-mlp-surrogate", over, out=tmp_path / "whole", quiet=True)
    with pytest.raises(Crash):
        api.run("digits-mlp-surrogate", over, out=tmp_path / "cut", quiet=True,
                callbacks=[crash_after(2)])  # fmt: skip
    api.run("digits-mlp-surrogate", over, out=tmp_path / "cut", resume=True, quiet=True)
    a = torch.load(tmp_path / "whole" / BEST, weights_only=True)
    b = torch.load(tmp_path / "cut" / BEST, weights_only=True)
    assert a["epoch"] == b["epoch"] == whole["best_epoch"]
    assert a["value"] == b["value"] == whole["best_test_acc"]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
