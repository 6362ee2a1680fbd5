"""`spikeopt compare`: same budget for every method, the table, evaluation counts, reuse."""

import csv
import os
import subprocess
import sys

import pytest

from spikeopt import api
from spikeopt.compare import (
    compare,
    cost_per_step,
    evaluations,
    figure,
    format_table,
    parse_method_overrides,
    variant,
)
from spikeopt.config import ConfigError, parse_overrides

TINY = ["trainer.epochs=1", "trainer.steps_per_epoch=2", "model.hidden=[16]", "encoder.steps=4",
        "es.population=8", "data.n_test=100", "data.batch_size=32"]  # fmt: skip


def spikeopt(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "spikeopt.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_compare_cli_runs_every_method_on_the_same_budget(tmp_path):
    r = spikeopt("compare", "digits-hybrid", *TINY, "--methods", "surrogate,hybrid-norm",
                 "--seeds", "2", "--out", str(tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| hybrid-norm | 2 |" in r.stdout and "± " in r.stdout
    runs = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert [(x["method"], x["seed"]) for x in runs] == [
        (m, s) for m in ("surrogate", "hybrid-norm") for s in ("0", "1")
    ]
    cost = {x["method"]: (int(x["forward_passes"]), int(x["backward_passes"])) for x in runs}
    # 2 steps: BPTT = 1 forward + 1 backward; a population of 8 adds 8 member forwards
    assert cost == {"surrogate": (2, 2), "hybrid-norm": (18, 2)}
    assert all(x["steps"] == "2" for x in runs)
    for f in ("table.csv", "table.md", "curves.png"):
        assert (tmp_path / f).stat().st_size > 0


def test_finished_runs_are_reused_and_a_changed_config_is_refused(tmp_path):
    over = parse_overrides(TINY)
    first = compare("digits-hybrid", ["surrogate"], 1, tmp_path, over)
    runs = (tmp_path / "runs.csv").read_text()
    stamp = (tmp_path / "surrogate" / "seed0" / "summary.json").stat().st_mtime_ns
    assert compare("digits-hybrid", ["surrogate"], 1, tmp_path, over) == first
    assert (tmp_path / "runs.csv").read_text() == runs
    assert (tmp_path / "surrogate" / "seed0" / "summary.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="another config"):
        compare("digits-hybrid", ["surrogate"], 1, tmp_path, {**over, "optim.lr": 0.5})


def test_bad_compare_inputs_are_clear_errors(tmp_path):
    r = spikeopt(
        "compare", "digits-hybrid", "--methods", "surrogate,hybird", "--out", str(tmp_path)
    )
    assert r.returncode == 2 and "did you mean 'hybrid'" in r.stderr and "hybrid-norm" in r.stderr
    with pytest.raises(ConfigError, match="METHOD:key=value"):
        parse_method_overrides(["optim.lr=0.1"], ["es"])
    with pytest.raises(ConfigError, match="METHOD:key=value"):
        parse_method_overrides(["cma:optim.lr=0.1"], ["es"])
    assert parse_method_overrides(["es:optim.lr=0.1"], ["es", "hybrid"]) == {
        "es": {"optim.lr": 0.1}, "hybrid": {}}  # fmt: skip
    with pytest.raises(ConfigError, match="--seeds"):
        compare("digits-hybrid", ["surrogate"], 0, tmp_path)
    with pytest.raises(ConfigError, match="hybrid.lam"):  # method settings fail before any run
        compare("digits-hybrid", ["surrogate", "hybrid"], 1, tmp_path, {"hybrid.lam": -1.0})
    assert not any(tmp_path.iterdir())


def test_evaluation_counts_follow_each_method():
    cfg = api.resolve("digits-hybrid", {"es.population": 10, "es.cosine_every": 3, **variant("es")})
    assert [cost_per_step(cfg, s) for s in range(4)] == [(12, 1), (11, 0), (11, 0), (12, 1)]
    cfg = api.resolve("digits-hybrid", {"guided.warmup_steps": 2, **variant("guided-es")})
    assert evaluations(cfg, 3) == (1 + 1 + 65, 3)
    assert evaluations(api.resolve("digits-hybrid", variant("snes")), 3) == (-1, -1)  # unknown
    assert variant("hybrid-norm") == {"method.name": "hybrid", "hybrid.normalize": True}


def test_a_one_epoch_one_seed_table_and_plot_show_what_was_measured():
    row = {"method": "es", "seeds": 1, "test_acc_mean": 0.5, "test_acc_std": 0.0,
           "test_loss_mean": 1.2, "test_loss_std": 0.0, "wall_s_mean": 0.04, "wall_s_std": 0.0,
           "steps": 2, "forward_passes": 18, "backward_passes": 0}  # fmt: skip
    line = format_table([row]).splitlines()[-1]
    assert "± " not in line and "| 0.04 |" in line  # was "0.0 ± 0.0"
    assert "| 0.5000 ± 0.0100 |" in format_table([{**row, "seeds": 2, "test_acc_std": 0.01}])
    fig = figure({"es": [[{"epoch": 1.0, "test_acc": 0.5, "test_loss": 1.2}]]}, "t")
    for ax in fig.axes:  # one point per method: drawn as a marker, a bare line is invisible
        (line2d,) = ax.get_lines()
        assert line2d.get_marker() == "o" and line2d.get_markersize() > 0
