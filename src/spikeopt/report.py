"""``spikeopt report DIR``: every run's TensorBoard scalars as one tidy CSV, and what helped.

DIR is the ``--out`` of ``spikeopt run`` (one run, or ``session<i>/`` runs), of
``spikeopt compare`` (``<method>/seed<k>/``) or of ``spikeopt tune`` (``trials/<trial>/run/``);
any folder holding such runs works. A run is a folder with a ``config.yaml`` and event files
under ``tb/``; its scalars are read with tbparse. The CSV has one row per scalar:
``run``, the config keys that differ between runs or were searched, ``step``, ``tag``,
``value``. The printed summary ranks the runs by the final (last logged) value of the metric
(the tuned one in a tune folder, else the task's headline: ``test/acc``, or ``return`` for
control) and, per searched key, gives that final value's mean per key value and, for numeric
keys, its Spearman rank correlation with the key.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikeopt import config as C
from spikeopt.train import outputs as io

TOP = 5  # runs the summary lists
FIX = "give the --out folder of spikeopt run, compare or tune"
# Ray's trial folder: <trainable>_<experiment hash>_<trial index>_<index>_<params>_<time>
_TRIAL = re.compile(r"(.+?_[0-9a-f]{5}_\d{5})_")


@dataclass
class Run:
    """One run folder: its name in the report, its flat config and its scalars."""

    name: str
    path: Path
    config: dict[str, Any]
    sampled: dict[str, Any]  # a tune trial's sample (Ray's params.json); {} otherwise
    scalars: list[tuple[int, str, float]] = field(default_factory=list)  # (step, tag, value)

    def value(self, key: str) -> Any:
        """The run's value of config key ``key`` (a trial's sample when its config lacks it)."""
        return self.config.get(key, self.sampled.get(key))

    def final(self, tag: str) -> float | None:
        """The value of ``tag`` at its last step, or None when the run never logged it."""
        points = [(s, v) for s, t, v in self.scalars if t == tag]
        return max(points)[1] if points else None


@dataclass
class Report:
    """What ``spikeopt report`` found: the runs, the key columns, the metric and its goal."""

    folder: Path
    runs: list[Run]
    keys: list[str]  # config columns of the CSV: searched keys first, then other differing ones
    searched: list[str]  # the keys the summary explains the metric by
    metric: str  # a TensorBoard tag
    mode: str  # max | min

    def finals(self) -> dict[str, float]:
        """Each run's final metric (runs that never logged it are left out)."""
        values = {r.name: r.final(self.metric) for r in self.runs}
        return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}

    def rows(self) -> list[dict[str, Any]]:
        """The tidy table: one dict per scalar (run, keys..., step, tag, value)."""
        out = []
        for r in self.runs:
            keys = {k: _cell(r.value(k)) for k in self.keys}
            for step, tag, value in sorted(r.scalars, key=lambda x: (x[1], x[0])):
                out.append({"run": r.name, **keys, "step": step, "tag": tag, "value": value})
        return out


def _cell(value: Any) -> Any:
    """A config value as one CSV cell: lists and mappings as JSON, scalars as they are."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def require_tbparse() -> Any:
    """The ``tbparse`` module, or a ConfigError naming the install command."""
    try:
        import tbparse
    except ImportError:
        raise C.ConfigError(
            "spikeopt report reads TensorBoard logs with tbparse, which is not installed; "
            "pip install 'spikeopt[report]'"
        ) from None
    return tbparse


def read_scalars(tb: Path) -> list[tuple[int, str, float]]:
    """Every scalar in the event files of ``tb`` as (step, tag, value), resumes applied.

    A resumed run opens a new event file with ``purge_step`` = its first new step, and readers
    must drop what older files logged from that step on (events written after the last
    checkpoint). tbparse reads each file on its own, so that purge is applied here: files
    in name order (the order they were opened), each cutting the older ones at its first step.
    """
    files = sorted(tb.glob("events.out.tfevents.*"))
    reader = require_tbparse().SummaryReader
    per_file = []
    for f in files:
        df = reader(str(f)).scalars
        per_file.append([(int(s), str(t), float(v)) for s, t, v in
                         zip(df["step"], df["tag"], df["value"])] if len(df) else [])  # fmt: skip
    kept: list[tuple[int, str, float]] = []
    cut = math.inf
    for points in reversed(per_file):
        kept = [p for p in points if p[0] < cut] + kept
        if points:
            cut = min(cut, min(p[0] for p in points))
    return kept


def _name(folder: Path, run: Path) -> str:
    """A short unique name: the path under ``folder``, a Ray trial by its id."""
    if (run.parent / "params.json").exists() and (m := _TRIAL.match(run.parent.name)):
        return m[1]
    rel = run.relative_to(folder).as_posix()
    return folder.resolve().name if rel == "." else rel


def find_runs(folder: Path) -> list[Run]:
    """Every run under ``folder`` (itself included) that has a config and event files."""
    if not folder.exists():
        raise C.ConfigError(f"{folder} does not exist; {FIX}")
    if not folder.is_dir():
        raise C.ConfigError(f"{folder} is a file, not a run folder; {FIX}")
    candidates = [folder, *sorted(p.parent for p in folder.rglob("config.yaml"))]
    runs, seen = [], set()
    for path in candidates:
        if path in seen or not (path / "config.yaml").exists():
            continue
        seen.add(path)
        if not list((path / "tb").glob("events.out.tfevents.*")):
            continue  # a sessions folder's own config, a Ray checkpoint, a run before epoch 1
        params = path.parent / "params.json"
        sampled = json.loads(params.read_text()) if params.exists() else {}
        cfg = C.flatten(C.load_yaml(str(path / "config.yaml")))
        runs.append(Run(_name(folder, path), path, cfg, sampled))
    if len({r.name for r in runs}) < len(runs):  # short names collide: use the whole paths
        for r in runs:
            r.name = r.path.relative_to(folder).as_posix()
    if not runs:
        raise C.ConfigError(
            f"no runs under {folder}: no folder there has a config.yaml and TensorBoard event "
            f"files under tb/; {FIX} (a run logs its first scalars after its first epoch)"
        )
    return runs


def _differing(runs: list[Run]) -> list[str]:
    """Config keys whose value is not the same in every run, in config order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config))
    seen = {k: {json.dumps(r.config.get(k), sort_keys=True) for r in runs} for k in keys}
    return [k for k in keys if len(seen[k]) > 1]


def _goal(folder: Path, runs: list[Run], metric: str, mode: str) -> tuple[str, str]:
    """The metric tag and its direction: given, else the tune search's, else the task's."""
    from spikeopt.train.experiment import TASKS

    tuned = folder / "tune_summary.json"
    saved = json.loads(tuned.read_text()) if tuned.exists() else {}
    if not metric:
        if saved.get("metric"):
            metric, mode = saved["metric"], mode or saved.get("mode", "")
        else:
            task = TASKS.get(runs[0].config.get("trainer.task", ""), TASKS["classification"])
            metric = task.metric
    elif saved.get("metric") and io.tag(metric) == io.tag(saved["metric"]):
        mode = mode or saved.get("mode", "")
    tag = io.tag(metric)  # metrics.csv names (test_acc) are accepted beside tags (test/acc)
    tags = sorted({t for r in runs for _, t, _ in r.scalars})
    if tag not in tags:
        raise C.ConfigError(
            f"metric '{metric}' is not logged by any run under {folder}; give --metric one of "
            f"{', '.join(tags)}"
        )
    goal = mode or ("min" if "loss" in tag else "max")
    return tag, C.choose("--mode", goal, ("max", "min"))


def build(folder: str | Path, metric: str = "", mode: str = "") -> Report:
    """Find and read every run under ``folder`` (nothing is written)."""
    folder = Path(folder)
    runs = find_runs(folder)
    for r in runs:
        r.scalars = read_scalars(r.path / "tb")
    if not any(r.scalars for r in runs):  # event files are opened before the first epoch ends
        raise C.ConfigError(
            f"no run under {folder} has logged a scalar yet ({len(runs)} found); run the "
            "report again once they have finished an epoch"
        )
    tag, goal = _goal(folder, runs, metric, mode)
    sampled = list(dict.fromkeys(k for r in runs for k in r.sampled))
    differing = _differing(runs)
    searched = sampled or differing
    keys = [*searched, *(k for k in differing if k not in searched)]
    return Report(folder, runs, keys, searched, tag, goal)


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None when either is constant."""

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return None
    return statistics.correlation(rx, ry)


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def effects(rep: Report) -> dict[str, dict[str, Any]]:
    """Per searched key: the final metric's mean and n per value, and (numeric) Spearman rho."""
    finals = rep.finals()
    out: dict[str, dict[str, Any]] = {}
    for key in rep.searched:
        pairs = [(r.value(key), finals[r.name]) for r in rep.runs if r.name in finals]
        numeric = bool(pairs) and all(_numeric(v) for v, _ in pairs)
        if numeric:
            pairs.sort(key=lambda p: float(p[0]))
        groups: dict[str, list[float]] = {}  # by the value as its CSV cell shows it
        for value, final in pairs:
            groups.setdefault(str(_cell(value)), []).append(final)
        rho = spearman([float(v) for v, _ in pairs], [f for _, f in pairs]) if numeric else None
        values = {v: (statistics.fmean(fs), len(fs)) for v, fs in groups.items()}
        out[key] = {"values": values, "spearman": rho}
    return out


def format_summary(rep: Report, out: Path | None = None) -> str:
    """The printed summary: the best runs by the final metric, and the metric per key value."""
    finals = rep.finals()
    ranked = sorted(finals, key=finals.__getitem__, reverse=rep.mode == "max")
    n = sum(len(r.scalars) for r in rep.runs)
    runs = f"{len(rep.runs)} run{'s' if len(rep.runs) > 1 else ''}"
    lines = [f"{runs}, {n} scalars" + (f" -> {out}" if out else "")]
    lines.append(f"best by final {rep.metric} ({rep.mode}), {min(TOP, len(ranked))} of "
                 f"{len(rep.runs)}:")  # fmt: skip
    width = max(len(r.name) for r in rep.runs)
    by_name = {r.name: r for r in rep.runs}
    for name in ranked[:TOP]:
        run = by_name[name]
        keys = " ".join(f"{k}={_cell(run.value(k))}"
                        for k in rep.searched)  # fmt: skip
        lines.append(f"  {name:<{width}}  {finals[name]:.4f}  {keys}".rstrip())
    missing = [r.name for r in rep.runs if r.name not in finals]
    if missing:
        lines.append(f"  never logged {rep.metric} (yet): {', '.join(missing)}")
    for key, eff in effects(rep).items():
        parts = [f"{v}: {m:.4f} (n={k})" for v, (m, k) in eff["values"].items()]
        rho = eff["spearman"]
        tail = f"; spearman rho {rho:+.2f}" if rho is not None else ""
        lines.append(f"{rep.metric} by {key}: " + " | ".join(parts) + tail)
    return "\n".join(lines)


def report(folder: str | Path, out: str | Path | None = None, metric: str = "",
           mode: str = "", force: bool = False) -> Report:  # fmt: skip
    """Read every run under ``folder`` and write the tidy CSV (default ``folder/report.csv``)."""
    path = Path(out) if out else Path(folder) / "report.csv"
    if path.is_dir():
        raise C.ConfigError(f"--out {path} is a folder; give a CSV file name, e.g. {path}.csv")
    if path.exists() and not force:
        raise C.ConfigError(f"{path} exists; give --force to overwrite it, or another --out")
    rep = build(folder, metric, mode)  # every problem is found before anything is written
    io.write_csv(path, rep.rows())
    return rep


def add_parser(sub: Any) -> None:
    """Register the ``report`` subcommand on the CLI's subparsers."""
    rp = sub.add_parser("report", help="every run's TensorBoard scalars as one CSV, best runs")
    rp.add_argument("folder", help="the --out folder of spikeopt run, compare or tune")
    rp.add_argument("--out", help="CSV to write (default FOLDER/report.csv)")
    rp.add_argument("--force", action="store_true", help="overwrite an existing --out")
    rp.add_argument("--metric", default="", help="tag to rank by (default: tuned or task's)")
    rp.add_argument(
        "--mode",
        default="",
        choices=("", "max", "min"),
        help="max: higher is better (default: the search's, else max; loss: min)",
    )
    rp.set_defaults(fn=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Write the CSV and print the summary."""
    out = Path(args.out) if args.out else Path(args.folder) / "report.csv"
    rep = report(args.folder, out, args.metric, args.mode, args.force)
    print(format_summary(rep, out))
    return 0
