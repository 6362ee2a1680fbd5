"""Populations in the thousands: per-member rate and peak memory of P = 4096 against P = 512.

The reference network of ``bench/population.py`` (784-256-10 LIF, T=25, batch 128, direct
encoding). Per population size and method, one *generation's population work*, timed in
interleaved windows (the sizes and methods alternate, so load from elsewhere hits them alike):

* ``es``: low-rank ES -- ``population.evaluate`` of every member, centered ranks, and the
  search-gradient ``estimate`` (which regenerates the noise);
* ``nodepert``: node perturbation on the same batched path -- held current noise on both
  layers (``NodePerturbation``), every member's per-sample losses
  (``population.evaluate_samples``), and the per-sample credit of each layer's current noise
  regenerated pair block by pair block, as ``methods/nodepert.py`` does with
  ``nodepert.credit=noise``;
* ``nodepert-act``: the same members with ``credit=activity`` -- each pair's
  measured current change recorded at both layers and the per-sample ridge least squares
  (``methods.nodepert.least_squares``).

Peak memory is the peak resident-set increase of one generation (first call at each size,
after releasing what earlier calls left), so P = 4096's figure is what the population costs
on top of the model and batch.

    OMP_NUM_THREADS=1 .venv/bin/python bench/population_scale.py --threads 1 [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    environment,
    markdown_table,
    peak_rss_mib,
    release_memory,
    reset_peak_rss,
    rss_mib,
    write_json,
)
from population import (
    BATCH,
    LOSS,
    N_IN,
    N_OUT,
    SIGMA,
    STEPS_T,
    Generations,
    Timing,
    reference_model,
)

from spikeopt.methods.nodepert import least_squares, pair_differences
from spikeopt.population import (
    PAIRS_PER_BLOCK,
    NodeNoise,
    NodePerturbation,
    estimate,
    evaluate,
    evaluate_samples,
    get_shaping,
    perturbed,
)

NODE_SIGMA = 0.1  # current noise std (the currents here have std ~0.5-1)


def es_generation(model: nn.Module, pert, x: Tensor, y: Tensor) -> None:
    """Low-rank ES: evaluate, centered ranks, estimate."""
    f = evaluate(model, pert, (x, y), LOSS)
    estimate([p for _, p in perturbed(model)], pert, get_shaping("centered_rank")(f))


def node_spec(model: nn.Module, population: int, generation: int) -> NodePerturbation:
    """Held current noise on both layers: one (B, N) draw per member and layer."""
    shapes = tuple((BATCH, layer.fc.out_features) for layer in model.layers)
    return NodePerturbation(population, (0, 1), (NODE_SIGMA,) * 2, shapes, 0, generation)


def nodepert_generation(model: nn.Module, spec: NodePerturbation, x: Tensor, y: Tensor) -> None:
    """Per-sample losses of every member, then each layer's current credit (K, B) x (K, B, N)."""
    samples, shared = evaluate_samples(model, spec, (x, y), LOSS)
    diff = pair_differences(samples, shared)
    params = [p for _, p in perturbed(model)]
    noise = NodeNoise(model, params, spec)
    grads = [torch.zeros(shape) for shape in spec.shapes]
    pairs = spec.population // 2
    for k0 in range(0, pairs, PAIRS_PER_BLOCK):
        k1 = min(k0 + PAIRS_PER_BLOCK, pairs)
        for g, xi in zip(grads, noise.pairs(k0, k1)):
            g += torch.einsum("kb,kbn->bn", diff[k0:k1].to(xi.dtype), xi)


def activity_generation(model: nn.Module, spec: NodePerturbation, x: Tensor, y: Tensor) -> None:
    """Per-sample losses and each pair's recorded current change, then the least squares."""
    activity: list[Tensor] = []
    samples, shared = evaluate_samples(model, spec, (x, y), LOSS, activity=activity)
    diff = pair_differences(samples, shared)
    for changes in activity:
        least_squares(diff / 2, changes, 0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="512,4096", help="population sizes, comma-separated")
    ap.add_argument("--methods", default="es,nodepert,nodepert-act",
                    help="es, nodepert and/or nodepert-act")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    ap.add_argument("--window-members", type=int, default=4096, help="members per window")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    env = environment(("torch", "spikeopt"))
    model = reference_model(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(BATCH, N_IN, generator=g).unsqueeze(1).expand(BATCH, STEPS_T, N_IN)
    y = torch.randint(0, N_OUT, (BATCH,), generator=g)
    gens = Generations(args.seed)

    def run(method: str, pop: int) -> None:
        if method == "es":
            es_generation(model, gens(pop, "lowrank"), x, y)
        else:
            gens.gen += 1
            credit = nodepert_generation if method == "nodepert" else activity_generation
            credit(model, node_spec(model, pop, gens.gen), x, y)

    cells = [(m, p) for m in methods for p in sizes]
    mem: dict[tuple[str, int], float] = {}
    timing = {cell: Timing() for cell in cells}
    for cell in cells:  # first call: warm-up and peak memory
        release_memory()
        reset_peak_rss()
        rss0 = rss_mib()
        run(*cell)
        mem[cell] = peak_rss_mib() - rss0
    for r in range(args.repeats):
        print(f"round {r + 1}/{args.repeats}", file=sys.stderr, flush=True)
        for m, p in cells:
            steps = max(1, args.window_members // p)
            timing[(m, p)].add(lambda m=m, p=p: run(m, p), steps, scale=p)
    rows, lines = [], []
    for m in methods:
        base = timing[(m, sizes[0])].wall.median
        for p in sizes:
            t = timing[(m, p)]
            rows.append([m, p, f"{t.wall.median:.1f}", f"{t.wall.median / base:.2f}×",
                         f"{t.cpu.median / timing[(m, sizes[0])].cpu.median:.2f}×",
                         f"{mem[(m, p)]:.0f}", f"{max(t.others):.2f}"])  # fmt: skip
        big = sizes[-1]
        ratio = timing[(m, big)].wall.median / base
        lines.append(f"{m}: P={big} runs at {ratio:.2f}× the per-member rate of P={sizes[0]} "
                     f"-- floor >= 0.8×: {'met' if ratio >= 0.8 else 'NOT met'}; peak memory "
                     f"{mem[(m, big)]:.0f} MiB -- floor <= 200 MB: "
                     f"{'met' if mem[(m, big)] <= 200 else 'NOT met'}")  # fmt: skip
    header = ["method", "P", "members/s", f"× P={sizes[0]}", f"× P={sizes[0]} (CPU time)",
              "peak ΔRSS MiB", "others' CPU"]  # fmt: skip
    print(f"# populations in the thousands: {N_IN}-256-{N_OUT} LIF, T={STEPS_T}, batch {BATCH}, "
          f"sigma {SIGMA} (ES, rank 1) / {NODE_SIGMA} (node, held); torch "
          f"{env['versions']['torch']}, {env['torch_threads']} thread(s)\n")  # fmt: skip
    print(markdown_table(header, rows))
    print()
    for line in lines:
        print("- " + line)
    if args.json:
        write_json(args.json, {"environment": env, "args": vars(args), "rows": rows,
                               "floors": lines})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
