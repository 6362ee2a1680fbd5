"""``spikeopt tune RECIPE --space SPACE.yaml --samples N``: the search from the command line.

Writes to ``--out`` (default ``runs/tune-<recipe>-<time>``): Ray's trial folders (each with the
loop's outputs under ``run/``), ``best_config.yaml`` (``spikeopt run RECIPE --config`` takes
it) and ``tune_summary.json`` (the best trial and one line per trial).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from spikeopt import config as C
from spikeopt.train import outputs as io
from spikeopt.tune import space
from spikeopt.tune.search import SCHEDULERS, SEARCHERS, Search


def add_parser(sub: Any) -> None:
    """Register the ``tune`` subcommand on the CLI's subparsers."""
    tn = sub.add_parser("tune", help="hyperparameter search on Ray Tune (needs spikeopt[ray])")
    tn.add_argument("recipe")
    tn.add_argument("overrides", nargs="*", metavar="key=value", help="fixed in every trial")
    tn.add_argument("--space", required=True, help="YAML search space over dotted keys")
    tn.add_argument("--samples", type=int, default=8, help="trials to sample (default 8)")
    tn.add_argument(
        "--metric", default="", help="metrics.csv column to optimise (test_acc; control: return)"
    )
    tn.add_argument("--mode", default="max", choices=("max", "min"))
    tn.add_argument("--scheduler", default="asha", choices=SCHEDULERS)
    tn.add_argument("--search", default="random", choices=SEARCHERS, help="search algorithm")
    tn.add_argument("--config", help="YAML file applied before the overrides")
    tn.add_argument("--cpus-per-trial", type=float, default=1.0)
    tn.add_argument("--gpus-per-trial", type=float, default=0.0)
    tn.add_argument("--max-concurrent", type=int, default=0, help="0 = what CPUs and RAM allow")
    tn.add_argument("--memory-mb", type=float, default=0.0, help="RAM budget (0 = 80%% free)")
    tn.add_argument("--address", default="", help="Ray cluster to join ('auto' = running)")
    tn.add_argument("--out", help="output folder (default runs/tune-<recipe>-<time>)")
    tn.set_defaults(fn=run_command)


def _plain(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def default_out(recipe: str) -> Path:
    """``runs/tune-<recipe>-<timestamp>`` under the working directory."""
    return Path("runs") / f"tune-{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_search(args: argparse.Namespace) -> Search:
    """The :class:`Search` the command line describes (nothing runs yet)."""
    out = Path(args.out or default_out(args.recipe))
    search = Search(args.recipe, args.metric, args.mode, C.parse_overrides(args.overrides),
                    args.config, storage_path=out, name="trials")  # fmt: skip
    search.bind_all(space.load(args.space)).set_num_samples(args.samples)
    search.set_scheduler(args.scheduler).set_search_alg(args.search)
    search.set_resources(args.cpus_per_trial, args.gpus_per_trial)
    search.set_max_concurrent_trials(args.max_concurrent).set_memory_budget(args.memory_mb)
    return search.set_address(args.address)


def write_outputs(search: Search) -> dict[str, Any]:
    """``best_config.yaml`` and ``tune_summary.json`` next to the trials; returns the summary."""
    out, metric = search.storage_path, search.metric
    best = search.best_result()
    path = search.write_best_config(out / "best_config.yaml")
    trials = [
        {
            "config": r.config,
            "epochs": (r.metrics or {}).get("training_iteration"),
            f"best_{metric}": _plain(float(r.metrics_dataframe[metric].agg(search.mode)))
            if r.metrics_dataframe is not None and metric in r.metrics_dataframe
            else None,
            "error": str(r.error).splitlines()[0] if r.error else None,
        }
        for r in search.results
    ]
    summary = {
        "recipe": search.recipe,
        "metric": metric,
        "mode": search.mode,
        f"best_{metric}": _plain(float(best.metrics_dataframe[metric].agg(search.mode))),
        "best_trial": best.config,
        "best_config": str(path),
        "trials": trials,
    }
    io.write_json(out / "tune_summary.json", summary)
    return summary


def run_command(args: argparse.Namespace) -> int:
    """Run the search, write the best config and a summary, print where they are."""
    search = build_search(args)
    search.run()
    summary = write_outputs(search)
    best = summary[f"best_{search.metric}"]
    print(f"best {search.metric} {best:.4f} with {summary['best_trial']}")
    print(f"best config: {summary['best_config']}  "
          f"(spikeopt run {args.recipe} --config {summary['best_config']})")  # fmt: skip
    print(f"outputs: {search.storage_path}")
    return 0
