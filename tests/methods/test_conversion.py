"""The conversion method: a real digits run, its converted model loaded, fine-tuned, exported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import spikeopt
from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.nn.models import SNN

# a short digits-conversion on its MLP variant (a few seconds): 8 epochs of the ANN, the SNN
# scored at T = 8 and 32
SHORT = {"model.channels": [], "model.hidden": [128], "trainer.epochs": 8,
         "conversion.timesteps": [8, 32], "trainer.seed": 0}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("conversion") / "run"
    api.run("digits-conversion", SHORT, out=out, quiet=True)
    return out


def test_digits_conversion_learns_and_reports_accuracy_against_t(run_dir: Path):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "conversion"
    assert summary["ann_test_acc"] > 0.85  # chance is 0.1
    assert summary["acc_T32"] > 0.85
    assert summary["acc_T32"] >= summary["ann_test_acc"] - 0.05  # the SNN keeps the ANN's
    assert summary["acc_T8"] > 0.3
    assert summary["snn_dir"] == str(run_dir / "snn")


def test_the_converted_model_is_a_normal_run_folder(run_dir: Path, tmp_path: Path):
    snn = spikeopt.load(run_dir / "snn")
    assert isinstance(snn, SNN)
    # any method fine-tunes it: the folder's config with the loaded model passed in
    for method in ("surrogate", "es"):
        tuned = api.run(
            "digits-surrogate",
            {
                "method.name": method,
                "trainer.epochs": 1,
                "trainer.steps_per_epoch": 2,
                "encoder.steps": 8,
                "es.population": 8,
            },
            config_file=str(run_dir / "snn" / "config.yaml"),
            model=spikeopt.load(run_dir / "snn"),
            quiet=True,
        )
        assert tuned["test_acc"] > 0.5, method
    nir_file = tmp_path / "snn.nir"
    cli = [sys.executable, "-m", "spikeopt.cli", "export", str(run_dir / "snn"), "--format", "nir"]
    done = subprocess.run([*cli, "--out", str(nir_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert nir_file.stat().st_size > 0


def test_resuming_the_converted_model_says_it_is_not_a_run(run_dir: Path):
    snn = run_dir / "snn"
    before = {f.name: f.stat().st_mtime_ns for f in snn.iterdir()}
    cli = [sys.executable, "-m", "spikeopt.cli", "run", "digits-conversion", "--resume", str(snn)]
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 2
    assert "nothing to resume" in done.stderr and f"--resume {run_dir}" in done.stderr
    assert {f.name: f.stat().st_mtime_ns for f in snn.iterdir()} == before  # nothing written


def test_a_model_it_cannot_convert_is_refused_before_anything_is_written(tmp_path: Path):
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "spikeopt.cli", "run", "digits-conversion", "--out", str(out)]
    done = subprocess.run([*cli, "model.cnn_pool=max"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "model.cnn_pool=avg" in done.stderr
    assert not out.exists()
    with pytest.raises(ConfigError, match="model.arch=cnn"):
        api.run("digits-conversion", {"model.arch": "mlp"}, quiet=True)
    with pytest.raises(ConfigError, match="conversion.percentile"):
        api.run("digits-conversion", {"conversion.percentile": 0.0}, quiet=True)
