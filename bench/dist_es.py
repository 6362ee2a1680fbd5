"""Distributed ES throughput: members/s of one generation's fitness, in process vs Ray actors.

    OMP_NUM_THREADS=1 .venv/bin/python bench/dist_es.py [--generations 5] [--workers 1 2]

The reference is digits-es as shipped (population 256, LIF 64-256-10, T=8, batch 128,
dropout 0.2). Every timed generation is checked bit-for-bit against the in-process fitness.
Actor start-up (model shipped once) is excluded; the per-generation centre put is included.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from spikeopt import api
from spikeopt.dist import RayObjective
from spikeopt.train.loop import build


def main() -> None:
    """Time in-process and Ray fitness for the same generations; print a JSON line each."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the driver")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    exp = build(api.resolve("digits-es", {}))
    x, y = exp.data.x_train[:128], exp.data.y_train[:128]
    batch = (exp.encode(x, None), y)
    inner, model = exp.method.objective, exp.model
    model.train()
    gens = [exp.method.perturbation(g) for g in range(args.generations + 1)]
    p = gens[0].population

    def timed(obj: object) -> tuple[float, list[torch.Tensor]]:
        torch.manual_seed(0)
        obj.fitness(model, gens[0], batch)  # type: ignore[attr-defined]  # warm-up / start
        out, t0 = [], time.perf_counter()
        for pert in gens[1:]:
            torch.manual_seed(pert.generation)
            out.append(obj.fitness(model, pert, batch))  # type: ignore[attr-defined]
        return p * args.generations / (time.perf_counter() - t0), out

    rate, ref = timed(inner)
    print(json.dumps({"backend": "in-process", "members_per_s": round(rate, 1),
                      "compute_ms_per_member": round(1000 / rate, 3)}), flush=True)  # fmt: skip
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(json.dumps(sent_bytes(ray, model, gens[1], batch, inner, args.workers)), flush=True)
    for w in args.workers:
        remote = RayObjective(inner, w, cpus_per_worker=1.0)
        rate, got = timed(remote)
        same = all(torch.equal(a, b) for a, b in zip(ref, got))
        remote.close()
        print(json.dumps({"backend": f"ray x{w}", "members_per_s": round(rate, 1),
                          "identical": same}), flush=True)  # fmt: skip
    ray.shutdown()
    rate, _ = timed(inner)  # again: the machine is shared, so bracket the Ray numbers
    print(json.dumps({"backend": "in-process (after)", "members_per_s": round(rate, 1)}))


def sent_bytes(ray: Any, model: Any, pert: Any, batch: Any, inner: Any, workers: list[int]) -> dict:
    """Bytes one generation moves, serialised by Ray's own serializer: the centre object put
    once (pulled once per node), each task's arguments, each shard's result (its fitness and
    the RNG state)."""
    from ray._private.worker import global_worker

    ser = global_worker.get_serialization_context()

    def size(obj: Any) -> int:
        return int(ser.serialize(obj).total_bytes)

    centre = {"state": model.state_dict(), "training": model.training,
              "rng": torch.get_rng_state(), "batch": batch}  # fmt: skip
    p, w = pert.population, max(workers)
    fit = inner.fitness(model, pert, batch)[: p // w]
    return {
        "population": p,
        "centre_bytes": size(centre),
        "centre_weights_bytes": size(model.state_dict()),
        "centre_batch_bytes": size(batch),
        "task_args_bytes": size(("fitness", pert, 0, p // w)),
        "result_bytes_per_shard": size((fit, torch.get_rng_state())),
        "result_fitness_bytes_per_shard": size(fit),
    }


if __name__ == "__main__":
    main()
