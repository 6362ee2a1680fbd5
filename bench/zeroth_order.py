"""Zeroth-order against BPTT, per task: node perturbation, ES and the predecessor's plain ES
beside surrogate-gradient BPTT on the same network and data (issue 12's one table).

Every run is an ordinary ``spikeopt.api.run`` of the task's recipe with only the method's keys
changed, written to ``OUT/<task>/<method>/seed<k>``; a finished run is read back, so an
interrupted table continues where it stopped. Each method keeps its own recipe settings
(population, learning rate, generations): the table compares what each reaches, at what wall
time and how many forward passes, with the ratio to BPTT's wall time measured in the same run.

    .venv/bin/python bench/zeroth_order.py --tasks digits --seeds 3 --threads 1
    .venv/bin/python bench/zeroth_order.py --tasks mnist1d,cifar10-subset --seeds 1 \\
        --set cifar10-subset:data.root=/path/to/cifar10-jpg.tar.gz
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikeopt import api  # noqa: E402
from spikeopt import config as C  # noqa: E402
from spikeopt.compare import evaluations  # noqa: E402

PROTOTYPE = str(ROOT / "bench" / "configs" / "es-prototype.yaml")


def recipe_methods(bptt_epochs: int, bptt_lr: float) -> dict[str, dict[str, Any]]:
    """The rows of a task whose recipe already holds the zeroth-order settings: nodepert and
    ES as the recipe has them, and BPTT over whole epochs at its own step size."""
    bptt = {"method.name": "surrogate", "trainer.steps_per_epoch": 0,
            "trainer.epochs": bptt_epochs, "optim.lr": bptt_lr}  # fmt: skip
    es = {"method.name": "es"}  # plain-es adds the prototype config to the same keys
    return {"surrogate": bptt, "nodepert": {"method.name": "nodepert"}, "es": es, "plain-es": es}


# task -> recipe, and per method the keys that turn the recipe into that method's own run
TASKS: dict[str, dict[str, Any]] = {
    "digits": {
        "recipe": "digits-nodepert",
        "methods": {
            "surrogate": {
                "method.name": "surrogate",
                "model.init": "default",
                "trainer.steps_per_epoch": 0,
                "trainer.epochs": 30,
            },
            "nodepert": {},
            # digits-es's own ES settings on the same 64-256-10 network
            "es": {
                "method.name": "es",
                "model.init": "default",
                "es.population": 256,
                "es.sigma": 0.05,
                "optim.lr": 0.01,
                "optim.weight_decay": 0.1,
                "trainer.steps_per_epoch": 0,
                "trainer.epochs": 40,
            },
            "plain-es": {
                "method.name": "es",
                "model.init": "default",
                "es.population": 256,
                "es.sigma": 0.05,
                "trainer.steps_per_epoch": 0,
                "trainer.epochs": 40,
            },
        },
    },
    "mnist1d": {
        "recipe": "mnist1d-es",
        "methods": recipe_methods(bptt_epochs=30, bptt_lr=5e-3),
    },
    "cifar10-subset": {
        "recipe": "cifar10-es-repeat-big",
        "methods": recipe_methods(bptt_epochs=15, bptt_lr=2e-3),
    },
}


def run(task: str, method: str, seed: int, out: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """One run (or the finished one already in ``out``): its summary and pass counts."""
    spec = TASKS[task]
    over = {**spec["methods"][method], **extra, "trainer.seed": seed, "trainer.progress": False}
    config = PROTOTYPE if method == "plain-es" else None
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
    else:
        summary = api.run(spec["recipe"], over, config, out, quiet=True)
    cfg = api.resolve(spec["recipe"], over, config)
    fwd, bwd = evaluations(cfg, int(summary["iterations"]))
    return {**summary, "forward_passes": fwd, "backward_passes": bwd}


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table: mean +- std over seeds, wall time and its ratio to BPTT's."""
    head = "| task | method | seeds | test acc | wall s | ratio to BPTT wall | steps | fwd passes |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        bptt = [r["wall_s"] for r in mine if r["method"] == "surrogate"]
        base = statistics.fmean(bptt) if bptt else float("nan")
        for method in dict.fromkeys(r["method"] for r in mine):
            rs = [r for r in mine if r["method"] == method]
            acc = [100 * r["test_acc"] for r in rs]
            wall = statistics.fmean(r["wall_s"] for r in rs)
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            lines.append(
                f"| {task} | {method} | {len(rs)} | {statistics.fmean(acc):.1f} ± {sd:.1f} % "
                f"| {wall:.0f} | {wall / base:.1f}× | {rs[0]['iterations']} "
                f"| {rs[0]['forward_passes']} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Run the requested tasks and methods, print and write the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits", help=f"comma-separated: {', '.join(TASKS)}")
    ap.add_argument("--methods", default="surrogate,nodepert,es,plain-es")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's choice)")
    ap.add_argument("--set", action="append", default=[], metavar="TASK:key=value")
    ap.add_argument("--out", default="runs/bench/zeroth-order")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    extra: dict[str, dict[str, Any]] = {t: {} for t in TASKS}
    for item in args.set:
        task, _, kv = item.partition(":")
        extra[task].update(C.parse_overrides([kv]))
    rows = []
    for task in args.tasks.split(","):
        for method in args.methods.split(","):
            for seed in range(args.seeds):
                out = Path(args.out) / task / method / f"seed{seed}"
                s = run(task, method, seed, out, extra[task])
                # the summary's own "method" (es for plain-es) must not overwrite the row's
                rows.append({**s, "task": task, "method": method, "seed": seed})
                print(f"{task} {method} seed {seed}: {s['test_acc']:.4f} in {s['wall_s']:.0f} s",
                      flush=True)  # fmt: skip
    text = table(rows)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
