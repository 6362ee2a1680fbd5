"""The `spikeopt` command, run as a real subprocess."""

import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from spikeopt.config import Config, load_yaml
from spikeopt.recipes import list_recipes
from spikeopt.train.outputs import run_lock

TINY = [
    "encoder.steps=4",
    "model.hidden=[32]",
    "trainer.epochs=1",
    "data.n_train=200",
    "data.n_test=100",
]


def spikeopt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "spikeopt.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_list_and_filter():
    r = spikeopt("list")
    assert r.returncode == 0 and "digits-surrogate" in r.stdout and "cnn-baseline" in r.stdout
    r = spikeopt("list", "--application", "sequence")
    names = {line.split()[0] for line in r.stdout.splitlines()[1:]}
    assert names == {r.name for r in list_recipes(application="sequence")}
    assert "mnist1d-rsnn-surrogate" in names and "digits-surrogate" not in names


def test_show_prints_every_key_with_its_doc():
    r = spikeopt("show", "digits-surrogate", "optim.lr=0.5")
    assert r.returncode == 0
    assert "optim.lr = 0.5    # learning rate" in r.stdout
    assert "neuron.tau_m = 20.0" in r.stdout


def test_show_prints_the_namespaces_the_recipe_uses_and_all_with_all():
    def namespaces(*args: str) -> set[str]:
        r = spikeopt("show", *args)
        assert r.returncode == 0, r.stderr
        return {line.split(".")[0] for line in r.stdout.splitlines() if not line.startswith("#")}

    image = namespaces("digits-surrogate")
    assert {"data", "model", "optim", "loss"} <= image and not image & {"rl", "env", "policy", "es"}
    assert {"es", "nodepert"} <= namespaces("digits-nodepert")
    control = namespaces("nav-reinforce")
    assert {"rl", "env", "policy"} <= control and not control & {"loss", "data", "es"}
    assert namespaces("digits-surrogate", "--all") == {f.name for f in dataclasses.fields(Config)}
    assert "--all" in spikeopt("show", "digits-surrogate").stdout.splitlines()[-1]


def test_run_writes_outputs_and_prints_accuracy(tmp_path):
    out = tmp_path / "run"
    r = spikeopt("run", "digits-mlp-surrogate", *TINY, "--out", str(out), "--quiet", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and str(out) in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["iterations"] == 4  # 200 samples / batch 64


def test_run_with_config_file_and_resume(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trainer:\n  epochs: 2\nmodel:\n  hidden: [16]\n")
    out = tmp_path / "run"
    r = spikeopt(
        "run",
        "digits-mlp-surrogate",
        "encoder.steps=4",
        "--config",
        str(cfg),
        "data.batch_size=32",  # overrides may also follow an option
        "--out",
        str(out),
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    written = (out / "config.yaml").read_text()
    assert "hidden:\n  - 16" in written and "batch_size: 32" in written
    r = spikeopt("run", "digits-mlp-surrogate", "--config", str(cfg), "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
    # a finished run resumes to the same end without training again
    r = spikeopt("run", "digits-mlp-surrogate", "--resume", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optim.lrr=0.1"], "unknown config key 'optim.lrr'; did you mean optim.lr"),
        (["optim.lr=fast"], "optim.lr: expected float"),
        (["trainer.epochs=1.5"], "trainer.epochs: expected int"),
        (["optim.lr"], "not key=value"),
        (["--config", "/nonexistent.yaml"], "config file not found"),
        (["data.name=imagenet"], "imagenet"),
        (["neuron.tau_m=0"], "neuron.tau_m=0.0 is out of range: it must be a finite number > 0"),
        (["model.hidden=[0]"], "model.hidden=[0] is out of range: it must be sizes >= 1"),
        (["optim.lr=.nan"], "optim.lr=nan is out of range: it must be > 0"),
        (["--sessions", "0"], "--sessions must be >= 1, got 0"),
        (["--config", "{dup}"], "key 'lr' appears twice in one mapping"),
        (["--config", "{latin1}"], "is not UTF-8 text"),
        (["--config", "{folder}"], "is a directory; give a YAML file"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    files = {"dup": tmp_path / "dup.yaml", "latin1": tmp_path / "l.yaml", "folder": tmp_path}
    files["dup"].write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    files["latin1"].write_bytes("model:\n  hidden: [128] # größer\n".encode("latin-1"))
    args = [a.format(**files) for a in args]
    out = tmp_path / "runs" / "run"  # like the default runs/<name>: no runs/ left either
    r = spikeopt("run", "digits-surrogate", *args, "--out", str(out))
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not out.parent.exists()


def test_unknown_recipe_suggests():
    r = spikeopt("run", "digits-surogate")
    assert r.returncode == 2 and "did you mean digits-surrogate" in r.stderr


def test_missing_dataset_is_a_clear_fast_error(tmp_path):
    r = spikeopt("run", "mnist-surrogate", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "data.root" in r.stderr
    assert not (tmp_path / "run").exists()


class _Touch:
    """A pickle payload: unpickled by a plain ``pickle.load``, it creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_cifar_tarball_with_code_in_a_batch_is_refused_and_nothing_runs(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    marker = tmp_path / "code-ran"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(pickle.dumps({b"data": _Touch(marker), b"labels": []}))
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        tf.add(batches, arcname=batches.name)
    out = tmp_path / "run"
    r = spikeopt("run", "cifar10-surrogate", f"data.root={evil}", f"data.cache_dir={tmp_path}",
                 "--out", str(out))  # fmt: skip
    assert r.returncode == 2 and "refused to unpickle it: it asks for posix.system" in r.stderr
    assert not marker.exists() and not out.exists()


def test_a_second_run_on_a_folder_in_use_fails_and_mixes_nothing(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "spikeopt.cli", "run", "digits-mlp-surrogate", "--quiet"]
    first = subprocess.Popen([*cmd, "trainer.epochs=1000", "--seed", "1", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.yaml").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        r = spikeopt("run", "digits-mlp-surrogate", "--seed", "2", "--out", str(out))
        assert r.returncode == 2 and "is being written by another run (pid" in r.stderr
        assert first.poll() is None  # the first run goes on, its files untouched
        assert load_yaml(str(out / "config.yaml"))["trainer"]["seed"] == 1
    finally:
        first.kill()
        first.wait()
    with run_lock(out):  # kill -9 released the lock: --resume can take the folder
        pass


def test_runs_started_together_without_out_get_their_own_folders(tmp_path):
    cmd = [sys.executable, "-m", "spikeopt.cli", "run", "digits-mlp-surrogate", *TINY, "--quiet"]
    runs = [subprocess.Popen([*cmd, "--seed", str(s)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for s in (1, 2)]  # fmt: skip
    for p in runs:
        assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2
    seeds = {json.loads((f / "summary.json").read_text())["seed"] for f in folders}
    assert seeds == {1, 2}
    for f in folders:
        assert load_yaml(str(f / "config.yaml"))["trainer"]["seed"] == json.loads(
            (f / "summary.json").read_text())["seed"]  # fmt: skip


def spikeopt_on_fresh_ray(*args: str) -> subprocess.CompletedProcess:
    """The command with a quiet Ray of its own: a short fresh temp dir (Ray's socket paths must
    stay short; 'auto' finds no cluster file there) and no RAY_ADDRESS."""
    pytest.importorskip("ray")
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_tmp}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    try:
        return subprocess.run([sys.executable, "-m", "spikeopt.cli", *args],
                              capture_output=True, text=True, env=env, timeout=180)  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("quiet", [False, True])
def test_asking_ray_for_more_cpus_than_the_cluster_has_fails_fast_instead_of_hanging(
    tmp_path, quiet
):
    out = tmp_path / "run"
    args = ["es.workers=3", "es.worker_cpus=100", "es.population=16", "es.chunk=4", *TINY]
    r = spikeopt_on_fresh_ray("run", "digits-es", *args, "--out", str(out), *["--quiet"] * quiet)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "asks Ray for 300 CPUs but the cluster has" in r.stderr and "es.workers" in r.stderr
    assert not out.exists()
    # --quiet silences Ray's own INFO/WARNING lines too; the error is all that is left
    assert ("Started a local Ray instance" in r.stderr) is not quiet
    if quiet:
        assert r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr


def test_a_run_that_turns_nonfinite_says_so_and_exits_1(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "optim.lr=.inf", "--quiet", "--out", str(out)]
    r = spikeopt("run", "digits-mlp-surrogate", *args)
    assert r.returncode == 1 and "NaN/inf" in r.stderr and "trainer.nonfinite=stop" in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False and summary["nonfinite_first"]["step"] == 1


def test_joining_a_ray_cluster_that_is_not_there_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    args = ["es.workers=1", "es.ray_address=auto", *TINY, "--out", str(out)]
    r = spikeopt_on_fresh_ray("run", "digits-es", *args)
    assert r.returncode == 2 and "es.ray_address=auto: no Ray cluster answered" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_resume_refuses_a_config_file_or_another_out_folder(tmp_path):
    out = tmp_path / "run"
    assert (
        spikeopt("run", "digits-mlp-surrogate", *TINY, "--quiet", "--out", str(out)).returncode == 0
    )
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.5\n")
    r = spikeopt(
        "run", "digits-mlp-surrogate", "--resume", str(out), "--config", str(tmp_path / "c.yaml")
    )
    assert r.returncode == 2 and "drop --config" in r.stderr
    r = spikeopt("run", "digits-mlp-surrogate", "--resume", str(out), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "drop --out" in r.stderr and not (tmp_path / "b").exists()


def test_version_and_a_piped_run_writes_lines_not_a_progress_bar(tmp_path):
    r = spikeopt("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("spikeopt 0.")
    r = spikeopt("run", "digits-mlp-surrogate", *TINY[:-3], "trainer.epochs=2", "data.n_train=200",
                 "data.n_test=100", "--out", str(tmp_path / "run"))  # fmt: skip
    assert r.returncode == 0 and "\r" not in r.stderr + r.stdout
    assert [line.split()[1] for line in r.stdout.splitlines() if line.startswith("epoch")] == [
        "1/2", "2/2"]  # fmt: skip


def test_forward_check(tmp_path):
    r = spikeopt(
        "run",
        "snn-forward",
        "model.arch=conv",
        "model.channels=[4]",
        "--out",
        str(tmp_path / "fwd"),
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "fwd" / "summary.json").read_text())
    assert summary["ok"] and summary["loss_finite"]
    assert summary["layers"][0]["shape"] == [128, 16, 4 * 8 * 8]
