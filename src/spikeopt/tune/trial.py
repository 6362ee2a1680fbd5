"""One Tune trial: a config from the search, trained by the ordinary loop, reported per row.

The trial is a thin adapter over :func:`spikeopt.train.loop.train` (DESIGN.md: ``tune`` is a
thin adapter over ``run()``), for every task: the loop writes its usual outputs (metrics.csv,
TensorBoard scalars incl. per-layer activity health, checkpoint.pt) under ``<trial dir>/run``,
and a callback forwards every metrics row (one per epoch; control: one per episode, or per
generation) to Ray with early-stopping signals added; whenever the tuned metric improves, the
row's checkpoint goes to Ray as a ``tune.Checkpoint`` (Ray keeps the best one), so the best
epoch -- not the last -- is what :meth:`Search.best_model` loads.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from spikeopt import config as C
from spikeopt.builders import Builders
from spikeopt.train.loop import train
from spikeopt.tune.space import require_tune

# What a checkpoint directory holds: enough to rebuild the model and to resume the trial.
CHECKPOINT_FILES = ("checkpoint.pt", "config.yaml", "metrics.csv")


class Reporter:
    """Loop callback: each row's metrics to Ray; the run's checkpoint when ``metric`` improves.

    Adds ``stop_best`` (best value so far of ``early_stop.metric``, or of ``metric`` when early
    stopping is off) and ``stop_wait`` (epochs since it last improved): the same signals the
    loop's patience rule reads, visible to the trial scheduler and in TensorBoard (``stop_wait``
    counts rows).
    """

    def __init__(self, out: Path, metric: str, mode: str, stop: C.EarlyStopConfig) -> None:
        self.out, self.metric, self.mode = out, metric, mode
        watch_mode = stop.mode != "none"
        self.watch = stop.metric if watch_mode else metric
        self.watch_goal = stop.goal if watch_mode else mode
        self.best: float | None = None
        self.watch_best: float | None = None
        self.wait = 0

    def _better(self, value: float, best: float | None, goal: str) -> bool:
        if math.isnan(value):
            return False
        return best is None or (value > best if goal == "max" else value < best)

    def __call__(self, row: dict[str, Any]) -> None:
        """Report ``row`` (numbers only) and, on improvement, the epoch's checkpoint."""
        tune = require_tune()
        if self.metric not in row:
            raise C.ConfigError(f"tune metric '{self.metric}' is not logged; one of {sorted(row)}")
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        watched = float(row.get(self.watch, math.nan))
        if self._better(watched, self.watch_best, self.watch_goal):
            self.watch_best, self.wait = watched, 0
        else:
            self.wait += 1
        metrics["stop_best"] = self.watch_best if self.watch_best is not None else math.nan
        metrics["stop_wait"] = self.wait
        value = float(row[self.metric])
        if not self._better(value, self.best, self.mode):
            tune.report(metrics)
            return
        self.best = value
        with tempfile.TemporaryDirectory() as tmp:
            for name in CHECKPOINT_FILES:
                if (self.out / name).exists():
                    shutil.copy2(self.out / name, Path(tmp) / name)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def run_trial(config: dict[str, Any], *, recipe: str, base: dict[str, Any], metric: str,
              mode: str, builders: Builders | None = None) -> None:  # fmt: skip
    """The Tune trainable: ``base`` config <- the trial's dotted ``config``, trained to the end."""
    tune = require_tune()
    cfg = C.apply(C.from_dict(base), config)
    cfg.trainer.progress = False
    out = Path(tune.get_context().get_trial_dir()) / "run"
    resume = False
    restored = tune.get_checkpoint()
    if restored is not None:  # a restarted trial continues from its saved (best) epoch
        with restored.as_directory() as d:
            out.mkdir(parents=True, exist_ok=True)
            for name in CHECKPOINT_FILES:
                if (Path(d) / name).exists():
                    shutil.copy2(Path(d) / name, out / name)
        resume = True
    reporter = Reporter(out, metric, mode, cfg.early_stop)
    train(cfg, out, resume, quiet=True, callbacks=[reporter], name=recipe, builders=builders)
