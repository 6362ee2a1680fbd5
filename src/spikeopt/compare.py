"""``spikeopt compare``: several methods on the same task, model, data and budget, N seeds each.

Every run is an ordinary :func:`spikeopt.api.run` of the recipe with only the method's keys
changed (``method.name``, plus what a variant such as ``hybrid-norm`` sets, plus per-method
overrides the user gives), written to ``OUT/<method>/seed<k>/``. A finished run whose resolved
config matches is reused, so an interrupted comparison continues where it stopped. The table
holds mean +- std over seeds of the final test accuracy and loss, the wall time and the
evaluations used; ``runs.csv``, ``table.csv`` and ``curves.png`` are written to ``OUT``.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spikeopt import api
from spikeopt import config as C
from spikeopt.functional.loss import make_loss
from spikeopt.methods import METHODS, make_method
from spikeopt.train import outputs as io

# Compare names beyond the registered methods' own: a method with some of its keys set.
VARIANTS: dict[str, dict[str, Any]] = {
    "hybrid": {"method.name": "hybrid", "hybrid.normalize": False},
    "hybrid-norm": {"method.name": "hybrid", "hybrid.normalize": True},
}


def variant(name: str) -> dict[str, Any]:
    """The overrides that turn a recipe into ``name`` (a registered method or a variant);
    the error lists the valid names."""
    if name in VARIANTS:
        return dict(VARIANTS[name])
    return {"method.name": C.choose("--methods", name, [*METHODS, *VARIANTS])}


def parse_method_overrides(
    items: Sequence[str], methods: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``['es:optim.lr=0.01']`` -> ``{'es': {'optim.lr': 0.01}}`` (values parsed as YAML)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        name, sep, rest = item.partition(":")
        if not sep or name not in out:
            raise C.ConfigError(
                f"--set '{item}' must be METHOD:key=value with METHOD one of {', '.join(methods)}"
            )
        out[name].update(C.parse_overrides([rest]))
    return out


def _passes(cfg: C.Config) -> Any:
    """The method's own ``passes(step)``, or None when it does not count them."""
    return getattr(make_method(cfg, None), "passes", None)


def cost_per_step(cfg: C.Config, step: int) -> tuple[int, int]:
    """(forward passes, backward passes) of training step ``step``, each over one minibatch,
    as the method counts them (``Method.passes``).

    A BPTT pass is one forward plus one backward; a population member is one forward.
    Test-set evaluation is the same for every method and is not counted. A method that does
    not count its passes (snes, cma, ...) gives (-1, -1): unknown, never guessed.
    """
    passes = _passes(cfg)
    return passes(step) if passes is not None else (-1, -1)


def evaluations(cfg: C.Config, steps: int) -> tuple[int, int]:
    """Total (forward, backward) passes of ``steps`` training steps (-1 if unknown)."""
    passes = _passes(cfg)
    if passes is None:
        return -1, -1
    costs = [passes(s) for s in range(steps)]
    if any(f < 0 for f, _ in costs):
        return -1, -1
    return sum(f for f, _ in costs), sum(b for _, b in costs)


def _read_rows(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as fh:
        return [{k: float(v) if v else math.nan for k, v in r.items()} for r in csv.DictReader(fh)]


def run_one(
    recipe: str, overrides: dict[str, Any], config_file: str | None, out: Path, quiet: bool
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Run (or reuse a finished identical run in ``out``) and return its summary and rows."""
    cfg = api.resolve(recipe, overrides, config_file)
    if (out / "summary.json").exists():
        saved = C.from_dict(C.load_yaml(str(out / "config.yaml")))
        if C.to_dict(saved) != C.to_dict(cfg):
            raise C.ConfigError(f"{out} holds a run with another config; choose another --out")
        summary = json.loads((out / "summary.json").read_text())
    else:
        if (out / "checkpoint.pt").exists():  # an interrupted run: continue it exactly
            summary = api.run(recipe, out=out, resume=True, quiet=quiet)
        else:
            summary = api.run(recipe, overrides, config_file, out, quiet=quiet)
    return summary, _read_rows(out / "metrics.csv")


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def compare(
    recipe: str,
    methods: Sequence[str],
    seeds: int,
    out: Path,
    overrides: dict[str, Any] | None = None,
    method_overrides: dict[str, dict[str, Any]] | None = None,
    config_file: str | None = None,
    quiet: bool = True,
) -> list[dict[str, Any]]:
    """Run every method for seeds 0..N-1 and write runs.csv, table.csv, curves.png to ``out``;
    returns the table (one dict per method)."""
    if seeds < 1:
        raise C.ConfigError(f"--seeds must be >= 1, got {seeds}")
    if not methods:
        raise C.ConfigError("--methods needs at least one method, e.g. surrogate,es")
    plans = {
        m: {**(overrides or {}), **variant(m), **(method_overrides or {}).get(m, {})}
        for m in methods
    }
    for over in plans.values():  # every bad setting fails before the first run
        cfg = api.resolve(recipe, over, config_file)
        make_method(cfg, make_loss(cfg.loss, cfg.model.neurons_per_class))
    runs: list[dict[str, Any]] = []
    curves: dict[str, list[list[dict[str, float]]]] = {}
    for m, over in plans.items():
        for seed in range(seeds):
            o = {**over, "trainer.seed": seed}
            summary, rows = run_one(recipe, o, config_file, out / m / f"seed{seed}", quiet)
            fwd, bwd = evaluations(api.resolve(recipe, o, config_file), int(summary["iterations"]))
            runs.append(
                {
                    "method": m,
                    "seed": seed,
                    "test_acc": summary["test_acc"],
                    "test_loss": summary["test_loss"],
                    "best_test_acc": summary["best_test_acc"],
                    "wall_s": summary["wall_s"],
                    "steps": summary["iterations"],
                    "forward_passes": fwd,
                    "backward_passes": bwd,
                }
            )
            curves.setdefault(m, []).append(rows)
    table = []
    for m in plans:
        mine = [r for r in runs if r["method"] == m]
        row: dict[str, Any] = {"method": m, "seeds": len(mine)}
        for key in ("test_acc", "test_loss", "wall_s"):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r[key] for r in mine])
        row["steps"] = mine[0]["steps"]
        row["forward_passes"] = mine[0]["forward_passes"]
        row["backward_passes"] = mine[0]["backward_passes"]
        table.append(row)
    io.write_csv(out / "runs.csv", runs)
    io.write_csv(out / "table.csv", table)
    title = " ".join([recipe, *(f"{k}={v}" for k, v in (overrides or {}).items())])
    io.write_text(out / "table.md", format_table(table, title) + "\n")
    plot(out / "curves.png", curves, title)
    return table


def format_table(table: list[dict[str, Any]], title: str = "") -> str:
    """The comparison as a Markdown table (also what the CLI prints)."""
    lines = [f"# {title}"] if title else []
    lines += [
        "| method | seeds | test acc | test loss | wall s | steps | fwd passes | bwd passes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        cells = [_pm(r, "test_acc", ".4f"), _pm(r, "test_loss", ".4f"), _pm(r, "wall_s", ".3g")]
        lines.append(
            f"| {r['method']} | {r['seeds']} | {' | '.join(cells)} | {r['steps']} "
            f"| {r['forward_passes']} | {r['backward_passes']} |"
        )
    return "\n".join(lines)


def _pm(row: dict[str, Any], key: str, spec: str) -> str:
    """``mean ± std`` of one table cell; one seed has no spread to show, and the wall time
    keeps three significant digits (a 0.04 s run printed as "0.0 ± 0.0" before)."""
    mean = format(row[f"{key}_mean"], spec)
    return mean if row["seeds"] < 2 else f"{mean} ± {format(row[f'{key}_std'], spec)}"


def plot(path: Path, curves: dict[str, list[list[dict[str, float]]]], title: str) -> None:
    """Write :func:`figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(curves, title)
    with io.atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def figure(curves: dict[str, list[list[dict[str, float]]]], title: str) -> Any:
    """Test accuracy and loss per epoch, mean over seeds with a min-max band, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for m, runs in curves.items():
        n = min(len(r) for r in runs)
        epochs = [runs[0][i]["epoch"] for i in range(n)]
        # markers: a one-epoch comparison is one point per method, which a bare line never draws
        style = {"marker": "o", "markersize": 4 if n < 30 else 0}
        for ax, key in zip(axes, ("test_acc", "test_loss")):
            vals = [[r[i][key] for r in runs] for i in range(n)]
            (line,) = ax.plot(epochs, [statistics.fmean(v) for v in vals], label=m, **style)
            ax.fill_between(
                epochs,
                [min(v) for v in vals],
                [max(v) for v in vals],
                alpha=0.2,
                color=line.get_color(),
            )
    for ax, key in zip(axes, ("test_acc", "test_loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
