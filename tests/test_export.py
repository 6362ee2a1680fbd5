"""spikeopt.load and `spikeopt export` on a real tiny training run, the CLI as a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nir
import pytest
import torch

import spikeopt
from spikeopt import config as C
from spikeopt.cli import main
from spikeopt.export import restore
from spikeopt.nir import from_nir
from spikeopt.tasks.classification import EVAL_SEED
from spikeopt.tasks.metrics import evaluate
from spikeopt.train.experiment import make_task

RUN = ["digits-mlp-surrogate", "trainer.epochs=3", "data.n_train=400", "data.n_test=200"]


def spikeopt_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "spikeopt.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-epoch digits MLP run (a few seconds), trained by `spikeopt run`."""
    out = tmp_path_factory.mktemp("export") / "run"
    r = spikeopt_cli("run", *RUN, "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def test_load_scores_the_summarys_best_and_last(run_dir: Path) -> None:
    """The loaded best model scores summary.json's best_test_acc on the test set, evaluated
    as training does; which="last" scores its test_acc."""
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = C.from_dict(C.load_yaml(str(run_dir / "config.yaml")))
    task = make_task(cfg, torch.device("cpu"), False)
    d = task.data

    def acc(model: torch.nn.Module) -> float:
        g = torch.Generator().manual_seed(cfg.trainer.seed + EVAL_SEED)
        cpu, bs = torch.device("cpu"), cfg.data.eval_batch_size
        return evaluate(model, task.loss, d.x_test, d.y_test, task.encode, bs, cpu, g,
                        d.n_classes)["acc"]  # fmt: skip

    assert summary["best_test_acc"] > 0.3  # 10 classes: well above chance
    assert acc(spikeopt.load(run_dir)) == summary["best_test_acc"]
    assert acc(spikeopt.load(run_dir, which="last")) == summary["test_acc"]
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["epoch"] == summary["best_epoch"] and best["metric"] == "test_acc"


def test_export_nir_gives_the_models_spikes(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.nir"
    r = spikeopt_cli("export", str(run_dir), "--format", "nir", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"wrote {out} (nir, best epoch" in r.stdout
    model, _, shape = restore(run_dir)
    back = from_nir(nir.read(out))
    x = (torch.rand(8, 10, *shape, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    with torch.no_grad():
        (s1, v1), (s2, v2) = model(x), back(x)
    assert all(torch.equal(a, b) for a, b in zip([*s1, *v1], [*s2, *v2]))
    assert not list(tmp_path.glob(".tmp-*"))


def test_export_state_dict(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "last.pt"
    r = spikeopt_cli("export", str(run_dir), "--format", "state_dict", "--which", "last",
                     "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    saved = torch.load(out, weights_only=True)
    want = spikeopt.load(run_dir, which="last").state_dict()
    assert saved.keys() == want.keys()
    assert all(torch.equal(saved[k], want[k]) for k in want)


def test_bad_input_exits_2_and_writes_nothing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No such folder, not a run folder, an existing --out, an unknown format, a model NIR
    cannot express, a bad dt: each a clear error and exit code 2, and no file written (the
    command in-process, one case as a subprocess too)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    taken = tmp_path / "taken.nir"
    taken.write_text("keep me")
    maxpool = tmp_path / "maxpool"
    conv = ["digits-surrogate", "trainer.epochs=1", "data.n_train=100", "data.n_test=50"]
    assert main(["run", *conv, "model.pool=max", "--out", str(maxpool), "--quiet"]) == 0
    new = tmp_path / "new.nir"
    cases = [
        ([str(tmp_path / "nope"), "--format", "nir", "--out", str(new)], "no such run folder"),
        ([str(empty), "--format", "nir", "--out", str(new)], "is not a run folder"),
        ([str(run_dir), "--format", "nir", "--out", str(taken)], "exists; add --force"),
        ([str(run_dir), "--format", "onnx", "--out", str(new)], "invalid choice: 'onnx'"),
        ([str(maxpool), "--format", "nir", "--out", str(new)], "model.pool=avg"),
        ([str(run_dir), "--format", "nir", "--dt", "0", "--out", str(new)], "dt must be"),
    ]
    capsys.readouterr()
    for args, message in cases:
        try:
            code = main(["export", *args])
        except SystemExit as stop:  # argparse's own errors
            code = int(stop.code or 0)
        assert code == 2, args
        assert message in capsys.readouterr().err, args
        assert not new.exists() and taken.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "maxpool", "taken.nir"]
    r = spikeopt_cli("export", str(run_dir), "--format", "nir", "--out", str(taken))
    assert r.returncode == 2 and "exists; add --force" in r.stderr
    assert main(["export", str(run_dir), "--format", "nir", "--out", str(taken), "--force"]) == 0
    assert nir.read(taken).metadata["dt"] == 1e-3


def test_load_refuses_what_is_not_a_run(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(C.ConfigError, match="which='middle'"):
        spikeopt.load(run_dir, which="middle")
    with pytest.raises(C.ConfigError, match="no such run folder"):
        spikeopt.load(tmp_path / "nope")
