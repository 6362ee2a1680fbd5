"""Learning benchmarks: run recipes over seeds and tabulate final / best test accuracy and time.

    .venv/bin/python bench/learning.py digits-surrogate digits-mlp-surrogate --seeds 0 1 2
    .venv/bin/python bench/learning.py mnist1d-rsnn-surrogate --seeds 0 --set trainer.epochs=40

Each run writes its usual outputs under ``--out`` (default ``runs/bench-learning``); the
table (markdown) goes to stdout and, with ``--json``, the raw summaries to a file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from spikeopt import api
from spikeopt.config import parse_overrides


def main(argv: list[str] | None = None) -> int:
    """Run every (recipe, seed) and print one markdown row per recipe."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("recipes", nargs="+")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides")
    p.add_argument("--out", default="runs/bench-learning")
    p.add_argument("--json", help="write the raw summaries here")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    results: dict[str, list[dict]] = {}
    for recipe in args.recipes:
        for seed in args.seeds:
            out = Path(args.out) / f"{recipe}-s{seed}"
            s = api.run(
                recipe,
                {**overrides, "trainer.seed": seed, "trainer.progress": False},
                out=out if not (out / "checkpoint.pt").exists() else None,
                quiet=True,
            )
            results.setdefault(recipe, []).append(s)
            print(
                f"{recipe} seed {seed}: test_acc {s['test_acc']:.4f} best {s['best_test_acc']:.4f}"
                f" in {s['wall_s']:.0f} s",
                file=sys.stderr,
            )
    print("| recipe | seeds | final test acc (mean ± std, min) | best | epochs | wall s / run |")
    print("|---|---|---|---|---|---|")
    for recipe, runs in results.items():
        acc = [r["test_acc"] for r in runs]
        best = [r["best_test_acc"] for r in runs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(
            f"| {recipe} | {len(runs)} | {statistics.mean(acc):.4f} ± {sd:.4f} ({min(acc):.4f}) "
            f"| {statistics.mean(best):.4f} | {runs[0]['epochs']} "
            f"| {statistics.mean(r['wall_s'] for r in runs):.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
