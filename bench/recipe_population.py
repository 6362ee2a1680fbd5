"""Population evaluation of any recipe's model: batched ``evaluate`` against the naive loop.

``bench/population.py`` measures the reference network against the peers; this script takes
the model a recipe builds (conv, recurrent, ...), at the recipe's batch size, T and population,
on a random batch of the recipe's input shape (the dataset itself is not needed), and times
one generation's fitness two ways, interleaved in the same process:

* ``loop``: for each member, materialise its weights and run the model (``functional_call``);
* ``spikeopt``: ``population.evaluate`` (batched low-rank, automatic chunks).

Before timing, the two fitness vectors are compared on the same members. The profile of one
batched generation (``--profile``) lists the operators where the time goes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/recipe_population.py cifar10-es-repeat-big \\
        data.batch_size=64 encoder.steps=4 model.channels=[16,32] model.hidden=[128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Rate, environment, markdown_table, window, write_json
from population import loop_fitness  # the same naive member loop as the reference benchmark

from spikeopt.config import Config, apply
from spikeopt.functional.loss import Loss, make_loss
from spikeopt.nn import build_model
from spikeopt.population import Perturbation, evaluate
from spikeopt.recipes import get_recipe
from spikeopt.tasks.encoders import step_shape

INPUT_SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "fashion": (1, 28, 28)}
INPUT_SHAPES |= {"digits": (1, 8, 8), "mnist1d": (1, 1, 40)}


def setup(args: argparse.Namespace) -> tuple[Config, nn.Module, Loss, Tensor, Tensor]:
    """The recipe's model and loss, and a random batch of its input shape (stride-0 time axis
    for repeat encoding, as the encoder makes it)."""
    overrides = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args.overrides)}
    cfg = apply(Config(), {**get_recipe(args.recipe).overrides, **overrides})
    torch.manual_seed(args.seed)
    shape = step_shape(cfg.encoder, INPUT_SHAPES[cfg.data.name])
    model = build_model(cfg, shape, 10)
    b, t = cfg.data.batch_size, cfg.encoder.steps
    if cfg.encoder.kind == "repeat":
        x = torch.rand(b, 1, *shape).expand(b, t, *shape)
    else:  # spikes
        x = (torch.rand(b, t, *shape) < 0.3).float()
    loss = make_loss(cfg.loss, cfg.model.neurons_per_class)
    return cfg, model, loss, x, torch.randint(0, 10, (b,))


def main(argv: list[str] | None = None) -> int:
    """Time both variants and print the table (and, with --profile, the top operators)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="profile one batched generation")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, model, loss, x, y = setup(args)
    e = cfg.es
    pert = Perturbation(e.population, e.sigma, e.rank, e.mode, seed=args.seed, table=e.table_size)
    runs = {
        "loop": lambda: loop_fitness(model, pert, x, y, loss),
        "spikeopt": lambda: evaluate(model, pert, (x, y), loss),
    }
    batched, looped = runs["spikeopt"](), runs["loop"]()
    diff = float((batched - looped).abs().max())
    rates = {name: Rate() for name in runs}
    others: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            rate, busy = window(fn, 1)
            rates[name].windows.append(rate * pert.population)
            others[name].append(busy)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# {args.recipe} {' '.join(args.overrides)}: P={pert.population}, B={x.shape[0]}, ")
    print(f"T={x.shape[1]}, {n_params} parameters, {args.threads} thread(s)\n")
    rows = [
        [
            name,
            f"{r.median:.1f}",
            f"{r.median / rates['loop'].median:.2f}×",
            f"{max(others[name]):.2f}",
        ]
        for name, r in rates.items()
    ]
    print(markdown_table(["variant", "members/s", "× loop", "others' CPU"], rows))
    print(f"\nfitness: max |batched - loop| = {diff:.2e} (fitness std {float(looped.std()):.3f})")
    if cfg.model.dropout > 0:  # batched members share one mask (common random numbers)
        print("(model.dropout > 0: each loop member draws its own dropout mask, so they differ)")
    if args.profile:
        from torch.profiler import profile

        with profile(record_shapes=True) as prof:
            runs["spikeopt"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    if args.json:
        payload = {"env": environment(["torch"]), "args": vars(args), "max_abs_diff": diff}
        payload["members_per_s"] = {k: r.windows for k, r in rates.items()}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
