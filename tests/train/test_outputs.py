"""Run folders: one writer at a time (the lock), unique default names, nothing left on failure."""

from pathlib import Path

import pytest

from spikeopt import api
from spikeopt.train import outputs
from spikeopt.train.outputs import LOCK, TMP_PREFIX, FolderTaken, run_lock, tag, write_text


def test_a_held_folder_refuses_a_second_writer_and_frees_itself(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with run_lock(out):
        (out / "config.yaml").write_text("x")
        taken = pytest.raises(FolderTaken, match=r"being written by another run \(pid \d+\)")
        with taken, run_lock(out):
            pass
    with run_lock(out):  # released on exit
        pass
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]  # the lock went with it


def test_a_block_that_writes_nothing_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), run_lock(tmp_path / "new"):
        raise RuntimeError
    assert not (tmp_path / "new").exists()
    with pytest.raises(RuntimeError), run_lock(tmp_path / "runs" / "a" / "new"):
        raise RuntimeError
    assert not (tmp_path / "runs").exists()  # the parents it created went too
    (tmp_path / "mine").mkdir()  # the user's own empty folder stays, without our lock file
    with run_lock(tmp_path / "mine"):
        pass
    assert list((tmp_path / "mine").iterdir()) == []


def test_default_names_skip_folders_that_exist(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(api.time, "strftime", lambda _: "20261202-010203")
    first = api.default_out("digits-es")
    assert first == Path("runs/digits-es-20261202-010203")
    first.mkdir(parents=True)
    assert api.default_out("digits-es") == Path("runs/digits-es-20261202-010203-2")


def test_api_run_into_a_finished_run_is_refused_before_anything_is_written(tmp_path) -> None:
    out = tmp_path / "run"
    over = {"trainer.epochs": 1, "data.n_train": 100, "data.n_test": 50, "model.hidden": [16]}
    api.run("digits-mlp-surrogate", over, None, out, quiet=True)

    def files() -> dict[str, int]:  # the run's own files (the lock records its holder's pid)
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != LOCK}

    before = files()
    with pytest.raises(FolderTaken, match="already holds a run; continue it with --resume"):
        api.run("digits-mlp-surrogate", over, None, out, quiet=True)
    assert files() == before and "summary.json" in before


def test_outputs_take_the_umask_mode_like_the_tb_folder(tmp_path: Path, monkeypatch) -> None:
    for mask, mode in ((0o022, 0o644), (0o027, 0o640)):
        monkeypatch.setattr(outputs, "UMASK", mask)
        write_text(tmp_path / "a.txt", "x")  # mkstemp alone would leave 0600
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode


def test_taking_the_lock_removes_temp_files_a_killed_run_left(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "tb").mkdir(parents=True)
    left = [out / f"{TMP_PREFIX}checkpoint.pt.k3j2", out / "tb" / f"{TMP_PREFIX}metrics.csv.x"]
    for f in left:
        f.write_bytes(b"half")
    (out / "checkpoint.pt").write_bytes(b"whole")
    with run_lock(out):
        assert not any(f.exists() for f in left) and (out / "checkpoint.pt").exists()


def test_tensorboard_tags_group_only_the_metric_prefixes() -> None:
    assert [tag(k) for k in ("train_loss", "test_acc", "layer0_rate", "train_eval_acc")] == [
        "train/loss", "test/acc", "layer0/rate", "train/eval_acc"]  # fmt: skip
    assert [tag(k) for k in ("wall_s", "optimal_steps", "steps_ratio", "lr")] == [
        "wall_s", "optimal_steps", "steps_ratio", "lr"]  # fmt: skip
