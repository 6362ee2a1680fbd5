"""`spikeopt report`: real run, sessions, compare and tune folders -> one tidy CSV and a summary."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from spikeopt import api, cli, report
from spikeopt.compare import compare
from spikeopt.config import parse_overrides
from spikeopt.train import outputs as io

TINY = ["trainer.epochs=2", "trainer.steps_per_epoch=2", "model.hidden=[16]", "encoder.steps=4",
        "es.population=8", "data.n_test=100", "data.batch_size=32"]  # fmt: skip


def spikeopt(*args, env=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "spikeopt.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def rows(path):
    return list(csv.DictReader(Path(path).open(newline="")))


def finals(table, tag):
    """{run: value at the last step of tag} from the CSV rows."""
    last = {}
    for r in table:
        if r["tag"] == tag and int(r["step"]) >= last.get(r["run"], (-1, 0))[0]:
            last[r["run"]] = (int(r["step"]), float(r["value"]))
    return {k: v for k, (_, v) in last.items()}


@pytest.fixture(scope="module")
def tune_folder(ray_local, tmp_path_factory):
    """A real 4-trial `spikeopt tune` folder (a 2 x 2 grid), built once by the command line on
    the suite's Ray (joined by address: no second Ray to start)."""
    root = tmp_path_factory.mktemp("tune")
    (root / "space.yaml").write_text(
        "optim.lr: {grid: [0.003, 0.03]}\nes.sigma: {grid: [0.05, 0.1]}\n"
    )
    address = ray_local.get_runtime_context().gcs_address
    env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    r = spikeopt("tune", "digits-es", *TINY[1:], "trainer.epochs=1", "--space",
                 str(root / "space.yaml"), "--samples", "1", "--scheduler", "fifo",
                 "--max-concurrent", "2", "--address", address, "--out", str(root / "out"),
                 env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "out"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """One real run of digits-surrogate (two epochs)."""
    out = tmp_path_factory.mktemp("run") / "one"
    api.run("digits-surrogate", parse_overrides(TINY), out=out, quiet=True)
    return out


def test_a_tune_folder_lists_all_4_trials_with_their_searched_keys(tune_folder):
    r = spikeopt("report", str(tune_folder))
    assert r.returncode == 0, r.stderr
    table = rows(tune_folder / "report.csv")
    cols = list(table[0])
    assert cols[0] == "run" and set(cols[1:3]) == {"optim.lr", "es.sigma"}
    assert cols[3:] == ["step", "tag", "value"]
    trials = sorted(tune_folder.glob("trials/*/params.json"))
    assert len(trials) == 4 and len({r["run"] for r in table}) == 4
    final = finals(table, "test/acc")
    for params in trials:
        name = params.parent.name.split("_")[:4]
        run = "_".join(name)  # run_trial_<hash>_<index>
        sample = json.loads(params.read_text())
        mine = [x for x in table if x["run"] == run]
        assert mine and {(x["optim.lr"], x["es.sigma"]) for x in mine} == {
            (str(sample["optim.lr"]), str(sample["es.sigma"]))
        }
        summary = json.loads((params.parent / "run" / "summary.json").read_text())
        assert final[run] == pytest.approx(summary["test_acc"])
        assert run in r.stdout  # 4 trials: every one is among the best 5 listed
    assert "4 runs" in r.stdout and "best by final test/acc (max), 4 of 4" in r.stdout
    for key in ("optim.lr", "es.sigma"):
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"test/acc by {key}:"))
        assert "(n=2)" in line and "spearman rho" in line


def test_a_compare_folder_explains_the_metric_by_method_and_seed(tmp_path, capsys):
    over = {**parse_overrides(TINY), "trainer.epochs": 1}
    compare("digits-hybrid", ["surrogate", "hybrid-norm"], 2, tmp_path, over)
    assert cli.main(["report", str(tmp_path), "--metric", "test_loss"]) == 0
    r = capsys.readouterr()
    table = rows(tmp_path / "report.csv")
    assert list(table[0]) == ["run", "method.name", "trainer.seed", "step", "tag", "value"]
    runs = rows(tmp_path / "runs.csv")
    loss = finals(table, "test/loss")
    assert loss == pytest.approx({f"{x['method']}/seed{x['seed']}": float(x["test_loss"])
                                  for x in runs})  # fmt: skip
    listed = [x.split()[0] for x in r.out.splitlines() if x.startswith("  ")]
    assert listed == sorted(loss, key=loss.__getitem__)  # a loss: lowest first
    assert "best by final test/loss (min)" in r.out
    by_method = next(x for x in r.out.splitlines() if "by method.name" in x)
    assert "hybrid: " in by_method and "surrogate: " in by_method and "spearman" not in by_method
    assert "spearman rho" in next(x for x in r.out.splitlines() if "by trainer.seed" in x)


def test_a_run_folder_holds_every_logged_value_and_sessions_are_runs(run_folder, tmp_path, capsys):
    out = tmp_path / "one.csv"
    assert cli.main(["report", str(run_folder), "--out", str(out)]) == 0
    r = capsys.readouterr()
    assert "1 run, " in r.out and "best by final test/acc (max), 1 of 1" in r.out
    table = rows(out)
    assert (
        list(table[0]) == ["run", "step", "tag", "value"]
        and not (run_folder / "report.csv").exists()
    )
    got = {(x["tag"], int(x["step"])): float(x["value"]) for x in table}
    want = {}
    for row in rows(run_folder / "metrics.csv"):  # what the loop logged, as TensorBoard tags
        for key, value in row.items():
            if key != "epoch" and value not in ("", "nan", "inf", "-inf"):
                want[(io.tag(key), int(row["epoch"]))] = float(value)
    assert got == pytest.approx(want, rel=1e-6)  # TensorBoard stores float32
    # a multi-session run: each session is a run, and the seed is what differs
    api.run("digits-surrogate", parse_overrides(TINY), out=tmp_path / "s", quiet=True, sessions=2,
            workers=1)  # fmt: skip
    rep = report.report(tmp_path / "s")
    assert [x.name for x in rep.runs] == ["session0", "session1"] and rep.keys == ["trainer.seed"]


def test_a_resumed_runs_purged_steps_are_dropped_as_tensorboard_drops_them(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = io.TensorBoard(tmp_path)
    for step in (1, 2, 3):
        first.log({"test_acc": step / 10}, step)
    first.close()
    again = io.TensorBoard(tmp_path, purge_step=3)  # resumed from step 2's checkpoint
    for step in (3, 4):
        again.log({"test_acc": step / 10 + 0.5}, step)
    again.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    want = [(e.step, "test/acc", pytest.approx(e.value)) for e in acc.Scalars("test/acc")]
    assert report.read_scalars(tmp_path) == want
    assert [s for s, _, _ in want] == [1, 2, 3, 4]


def test_spearman_matches_pandas_with_ties_and_is_none_when_constant():
    xs, ys = [0.1, 0.3, 0.3, 1.0, 0.2], [0.5, 0.4, 0.9, 0.9, 0.1]
    assert report.spearman(xs, ys) == pytest.approx(pd.Series(xs).corr(pd.Series(ys), "spearman"))
    assert report.spearman([1, 1, 1], [1, 2, 3]) is None


# Every bad input through the real command line, in one process (each start costs seconds):
# (exit code, stderr) of cli.main per case, as `spikeopt report ...` would exit and print.
DRIVER = """
import contextlib, io, json, sys
from spikeopt import cli
out = []
for args in json.loads(sys.argv[1]):
    if args[0] == "--no-tbparse":
        sys.modules["tbparse"] = None  # as if it were not installed
        args = args[1:]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = cli.main(["report", *args])
        except SystemExit as e:  # argparse's own errors
            rc = e.code
    out.append([rc, err.getvalue()])
print(json.dumps(out))
"""


def test_bad_input_names_the_problem_and_the_fix_and_writes_nothing(run_folder, tmp_path):
    empty = tmp_path / "empty"
    (empty / "half").mkdir(parents=True)
    (empty / "half" / "config.yaml").write_text("trainer: {epochs: 1}\n")  # killed before epoch 1
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "early" / "config.yaml").parent.mkdir()
    (tmp_path / "early" / "config.yaml").write_text("trainer: {epochs: 1}\n")
    io.TensorBoard(tmp_path / "early" / "tb").close()  # an event file, no scalar in it yet
    (tmp_path / "taken.csv").write_text("mine\n")
    target, run = str(tmp_path / "r.csv"), str(run_folder)
    cases = [
        ([str(tmp_path / "nope")], "does not exist; give the --out folder of spikeopt run"),
        ([str(tmp_path / "file.txt")], "is a file, not a run folder; give the --out folder"),
        ([str(empty)], "no runs under"),
        ([str(tmp_path / "early")], "has logged a scalar yet (1 found); run the report again"),
        ([run, "--metric", "test/acc_x"], "not logged by any run"),
        ([run, "--metric", "test/acc", "--mode", "best"], "invalid choice: 'best'"),
        ([run, "--out", str(tmp_path / "taken.csv")], "exists; give --force to overwrite it"),
        ([run, "--out", str(tmp_path / "empty"), "--force"], "is a folder; give a CSV file"),
        (["--no-tbparse", run], "pip install 'spikeopt[report]'"),
    ]
    args = [a if "--out" in a else [*a, "--out", target] for a, _ in cases]
    cmd = [sys.executable, "-c", DRIVER, json.dumps(args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.splitlines()[-1])
    for (case, message), (rc, err) in zip(cases, results):
        assert rc == 2 and message in err, (case, err)
    assert "give --metric one of " in results[4][1] and "test/acc, " in results[4][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["early", "empty", "file.txt", "taken.csv"]
    assert (tmp_path / "taken.csv").read_text() == "mine\n"
    report.report(run_folder, tmp_path / "taken.csv", force=True)  # --force overwrites
    assert (tmp_path / "taken.csv").read_text().startswith("run,step,tag,value")
