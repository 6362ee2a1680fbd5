"""`spikeopt diagnose`: every check through the CLI, and each check's numbers on its own."""

import os
import subprocess
import sys

import pytest

from spikeopt import api
from spikeopt.cli import main
from spikeopt.config import ConfigError
from spikeopt.diagnose import CHECKS, figure
from spikeopt.diagnose.checks import Finding, activity
from spikeopt.diagnose.gradients import encoders, grad_quality, overfit_batch

TINY = {"model.hidden": [16], "encoder.steps": 4, "data.n_train": 200, "data.n_test": 100,
        "data.batch_size": 32, "es.population": 16, "trainer.progress": False}  # fmt: skip


def spikeopt(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "spikeopt.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_every_check_prints_a_verdict_and_writes_csv_and_png(tmp_path):
    over = [f"{k}={v}".replace(" ", "") for k, v in TINY.items()]
    r = spikeopt("diagnose", "digits-hybrid", *over, "--steps", "5", "--epochs", "1",
                 "--populations", "8,16", "--sigmas", "0.05", "--out", str(tmp_path))  # fmt: skip
    assert r.returncode in (0, 1), r.stderr  # 1 = a check failed, which is a verdict too
    lines = r.stdout.splitlines()
    for name in CHECKS:
        line = next(x for x in lines if x.startswith(name + " "))
        assert " ok " in line or " FAIL " in line, line
        assert (tmp_path / f"{name}.csv").stat().st_size > 0
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert "BPTT loss" in r.stdout and "std error" in r.stdout


def test_unknown_check_is_a_clear_error(tmp_path, capsys):
    args = ["diagnose", "digits-hybrid", "--checks", "forward,grad_quality", "--out", str(tmp_path)]
    assert main(args) == 2 and "did you mean 'grad-quality'" in capsys.readouterr().err
    assert not tmp_path.joinpath("forward.csv").exists()  # nothing ran


@pytest.mark.parametrize(
    ("over", "word"),
    [({"neuron.v_threshold": 100.0}, "silent"), ({"neuron.v_threshold": 0.001}, "saturated")],
)
def test_activity_advises_on_silent_and_saturated_layers(over, word):
    f = activity(api.resolve("digits-hybrid", {**TINY, **over}), batches=1)
    assert not f.ok and word in f.verdict and "layer0" in f.verdict
    assert activity(api.resolve("digits-hybrid", TINY), batches=1).ok  # the recipe is healthy


def test_overfit_batch_bptt_loss_falls():
    f = overfit_batch(api.resolve("digits-hybrid", {**TINY, "optim.lr": 0.01}), steps=15)
    bptt = [r["loss"] for r in f.rows if r["method"] == "surrogate"]
    assert len(bptt) == 15 and bptt[-1] < 0.7 * bptt[0]
    assert {r["method"] for r in f.rows} == {"surrogate", "es"}


def test_grad_quality_improves_with_the_population():
    f = grad_quality(api.resolve("digits-hybrid", TINY), populations=(4, 256), sigmas=(0.01,))
    small, large = (r["cos_surrogate"] for r in f.rows)
    assert large > small and large > 0.1
    assert f.ok and "points where the true loss falls" in f.verdict
    assert all(-1 <= r["agreement"] <= 1 for r in f.rows)  # a cosine, clipped


def test_grad_quality_fails_a_biased_surrogate():
    sharp = {**TINY, "neuron.surrogate": "boxcar", "neuron.alpha": 20.0}
    f = grad_quality(api.resolve("digits-hybrid", sharp), populations=(1024,), sigmas=(0.01,))
    assert not f.ok and "BIASED" in f.verdict


def test_encoders_measure_noise_only_where_the_encoding_is_random():
    f = encoders(api.resolve("digits-hybrid", TINY), draws=3)
    rows = {r["encoder"]: r for r in f.rows}
    assert rows["rate"]["noise"] > 0 and rows["rate"]["consistency"] < 1 - 1e-6
    for kind in ("deterministic", "repeat"):
        assert rows[kind]["noise"] == 0 and rows[kind]["consistency"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="draws"):
        encoders(api.resolve("digits-hybrid", TINY), draws=1)
    # digits are static images: the sequence encoder is reported as skipped, with the reason
    seq = encoders(api.resolve("digits-hybrid", TINY), kinds=("sequence", "repeat"), draws=2)
    assert "static samples" in seq.rows[0]["skipped"] and seq.rows[1]["signal"] > 0


def test_plots_draw_categories_as_bars_and_log_axes_at_the_measured_values():
    layers = [{"layer": i, "rate": r} for i, r in enumerate((0.1, 0.2, 0.05))]
    fig = figure(Finding("forward", True, "", layers, "layer", ["rate"], bars=True))
    (ax,) = fig.axes
    assert not ax.get_lines() and len(ax.patches) == 3  # no line joining layers 0, 1, 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    one = figure(Finding("activity", True, "", layers[:1], "layer", ["rate"], bars=True))
    assert (
        len(one.axes[0].patches) == 1 and one.axes[0].get_xlim()[1] - one.axes[0].get_xlim()[0] < 2
    )
    rows = [{"population": p, "sigma": s, "cos": 0.1} for p in (16, 64, 256) for s in (0.01, 0.2)]
    fig = figure(Finding("grad-quality", True, "", rows, "population", ["cos"], group="sigma",
                         logx=True))  # fmt: skip
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64", "256"]
    assert not ax.xaxis.get_minorticklocs().size and len(ax.get_lines()) == 2
