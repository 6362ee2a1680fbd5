"""The predecessor's Makefile targets run their recipes (real make, real runs, tiny budgets):
every target's command is checked, two of them run end to end."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spikeopt.recipes import RECIPES
from tests.tasks.test_datasets import make_idx, make_pickles

ROOT = Path(__file__).resolve().parents[1]
# target -> recipe, as the README's table lists them
TARGETS = {
    "cnn": "cifar10-cnn-baseline",
    "snn_forward": "snn-forward",
    "es_subset": "cifar10-es-subset",
    "es_parallel": "cifar10-es-parallel",
    "mnist_es": "mnist-es",
    "es_repeat_small": "cifar10-es-repeat-small",
    "es_repeat_big": "cifar10-es-repeat-big",
    "es_norepeat_big": "cifar10-es-norepeat-big",
}
TINY = (
    "trainer.epochs=1 trainer.steps_per_epoch=1 data.n_train=20 data.n_test=10 "
    "data.batch_size=10 es.population=4"
)
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``make`` in the repository with this interpreter's venv, never reinstalling it."""
    bin_dir = str(Path(sys.executable).parent)
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), f"BIN={bin_dir}", "-o", ".venv/.installed", *args],
        capture_output=True, text=True, timeout=300, env={**env},
    )  # fmt: skip


def test_every_target_names_a_recipe_and_the_readme_lists_it() -> None:
    readme = (ROOT / "README.md").read_text()
    for target, recipe in TARGETS.items():
        assert recipe in RECIPES, recipe
        r = make("-n", target, ARGS="x=1", OUT="o", PATH="/usr/bin:/bin")
        assert r.returncode == 0, r.stderr
        assert re.search(rf"spikeopt run {recipe} .*x=1 --out o$", r.stdout.strip()), r.stdout
        assert re.search(rf"`make {target}`.*`{recipe}`", readme), target
    assert "`make sync`" in readme


# run for real: the MNIST path and a CIFAR one (each recipe itself runs in
# tests/test_recipes.py; the test above checks every target's command line)
RUN = ["mnist_es", "es_subset"]


def test_targets_run(tmp_path: Path) -> None:
    make_pickles(tmp_path / "cifar")
    make_idx(tmp_path / "mnist", gz=False)
    env = {"PATH": "/usr/bin:/bin", "SPIKEOPT_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}  # fmt: skip
    assert make("sync", **env).returncode == 0
    for target, recipe in [(t, TARGETS[t]) for t in RUN]:
        out = tmp_path / "runs" / target
        r = make(target, f"CIFAR={tmp_path / 'cifar'}", f"MNIST={tmp_path / 'mnist'}",
                 f"ARGS={TINY}", f"OUT={out}", **env)  # fmt: skip
        assert r.returncode == 0, (target, r.stderr[-2000:])
        summary = json.loads((out / "summary.json").read_text())
        assert summary["recipe"] == recipe and summary["iterations"] == 1, summary
