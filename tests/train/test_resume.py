"""What a resume may change, and the clear errors for everything else (issue 15.6)."""

import json
from pathlib import Path

import pytest
import yaml

from spikeopt import api
from spikeopt.config import ConfigError
from tests.helpers import Crash, crash_after

FAST = {"encoder.steps": 4, "model.hidden": [32], "trainer.steps_per_epoch": 2,
        "trainer.progress": False, "data.n_train": 200, "data.n_test": 100}  # fmt: skip


def crashed_run(out: Path, **over) -> None:
    """A 4-epoch run of digits-mlp-surrogate killed after its 2nd epoch's checkpoint."""
    with pytest.raises(Crash):
        api.run("digits-mlp-surrogate", {**FAST, "trainer.epochs": 4, **over}, out=out,
                quiet=True, callbacks=[crash_after(2)])  # fmt: skip


def test_a_resume_may_not_change_what_the_run_computes(tmp_path):
    crashed_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"model\.hidden=\[64\] differs from the run's \[32\]"):
        api.run("digits-mlp-surrogate", {"model.hidden": [64]}, out=tmp_path / "run",
                resume=True, quiet=True)  # fmt: skip
    # where it runs may change
    summary = api.run("digits-mlp-surrogate", {"trainer.progress": True, "trainer.device": "cpu"},
                      out=tmp_path / "run", resume=True, quiet=True)  # fmt: skip
    assert summary["epochs"] == 4


def test_a_longer_resume_is_refused_when_a_schedule_was_laid_out_over_the_length(tmp_path):
    crashed_run(tmp_path / "cos", **{"sched.name": "cosine"})
    with pytest.raises(ConfigError, match=r"trainer\.epochs=8 would change the run's length, "
                       r"but sched\.name=cosine was laid out over trainer\.epochs=4"):  # fmt: skip
        api.run("digits-mlp-surrogate", {"trainer.epochs": 8}, out=tmp_path / "cos",
                resume=True, quiet=True)  # fmt: skip
    crashed_run(tmp_path / "flat", **{"sched.name": "none"})
    summary = api.run("digits-mlp-surrogate", {"trainer.epochs": 6}, out=tmp_path / "flat",
                      resume=True, quiet=True)  # fmt: skip
    assert summary["epochs"] == 6


def test_a_damaged_checkpoint_or_an_edited_config_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    crashed_run(out)
    ck = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(ck[: len(ck) // 2])
    with pytest.raises(ConfigError, match="cannot be read as a spikeopt checkpoint"):
        api.run("digits-mlp-surrogate", out=out, resume=True, quiet=True)
    (out / "checkpoint.pt").write_bytes(ck)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["model"]["hidden"] = [48]
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="does not fit the model and method of"):
        api.run("digits-mlp-surrogate", out=out, resume=True, quiet=True)


def test_resuming_under_another_recipe_name_is_refused(tmp_path):
    out = tmp_path / "run"
    crashed_run(out)
    with pytest.raises(ConfigError, match=r"is a run of digits-mlp-surrogate, not digits-es"):
        api.run("digits-es", out=out, resume=True, quiet=True)
    summary = api.run("digits-mlp-surrogate", out=out, resume=True, quiet=True)
    assert summary["recipe"] == "digits-mlp-surrogate"
    assert json.loads((out / "summary.json").read_text())["recipe"] == "digits-mlp-surrogate"
