"""Cost of the training loop's non-finite guard (``trainer.nonfinite``) per step.

Each step the loop copies the parameters, buffers and optimizer state into buffers kept for
the run and tests them for NaN/inf (``spikeopt.train.loop.Guard``, ``nonfinite_count``). This
times method steps with and without that work, interleaved, on digits through a 64-256-10 LIF
network at T=25, batch 128 (BPTT, and ES with 16 members):

    .venv/bin/python bench/loop_guard.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from spikeopt import api
from spikeopt.train import loop


def main() -> None:
    """Print the per-step time with and without the guard, and the guard alone."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's choice)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="steps per timing window")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {"model.hidden": [256], "encoder.steps": 25, "data.batch_size": 128}
    for method, extra in (("surrogate", {}), ("es", {"es.population": 16})):
        exp = loop.build(api.resolve("digits-mlp-surrogate", {**over, "method.name": method,
                                                              **extra}))  # fmt: skip
        batches = [b.data for b in exp.task.batches(0)][: args.steps]
        guard, times = loop.Guard(), {"guard": [], "none": []}
        for b in batches[:3]:  # warm up (and create the optimizer state)
            exp.state, metrics = exp.method.step(exp.state, b)
        for _ in range(args.rounds):
            for mode in times:
                t = time.perf_counter()
                for b in batches:
                    if mode == "guard":
                        guard.save(exp)
                    exp.state, metrics = exp.method.step(exp.state, b)
                    if mode == "guard":
                        loop.nonfinite_count(exp, metrics)
                times[mode].append((time.perf_counter() - t) / len(batches) * 1e3)
        t = time.perf_counter()
        for _ in range(50):
            guard.save(exp)
            loop.nonfinite_count(exp, metrics)
        alone = (time.perf_counter() - t) / 50 * 1e3
        g, n = statistics.median(times["guard"]), statistics.median(times["none"])
        print(f"{method}: step {n:.2f} ms, with the guard {g:.2f} ms ({g / n:.3f}x); "
              f"the guard alone {alone:.2f} ms ({alone / n:.1%} of a step)")  # fmt: skip


if __name__ == "__main__":
    main()
