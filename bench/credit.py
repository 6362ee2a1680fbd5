"""How much each forward pass teaches: per-layer cosine of zeroth-order estimates with BPTT's.

A recipe's network is first trained a little by BPTT (``--warm-epochs`` epochs of the recipe's
data at its batch size, so the gradient is neither the random-init one nor ~0), then, per
variant (``name=key=value,key=value`` settings on top of the recipe), ``--batches`` generations
are run on the same batches from the same weights *without* applying them: each generation's
estimate is compared with the surrogate gradient on its batch, layer by layer (mean over the
batches). The default variants are node perturbation's two credits on the recipe's members.
The surrogate gradient is a proxy for the hard-spike network's true one (it is biased most for
the layers furthest from the loss), so read the cosines as ratios between variants.

    OMP_NUM_THREADS=1 .venv/bin/python bench/credit.py cifar10-es-repeat-big --threads 1 \\
        --set data.root=../shared/data/cifar10-jpg.tar.gz
    OMP_NUM_THREADS=1 .venv/bin/python bench/credit.py mnist1d-es --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_json

from spikeopt import api
from spikeopt.config import parse_overrides
from spikeopt.methods.strategy import Generation, cosine
from spikeopt.population import perturbed
from spikeopt.train.experiment import build

DEFAULT_VARIANTS = ["noise=nodepert.credit=noise", "activity=nodepert.credit=activity"]


def settings(text: str) -> dict[str, Any]:
    """``key=value,key=value`` as overrides (values parsed as on the command line)."""
    return parse_overrides([kv for kv in text.split(",") if kv])


def warm_weights(recipe: str, base: dict[str, Any], epochs: int) -> dict[str, torch.Tensor]:
    """The recipe's network after ``epochs`` epochs of BPTT at Adam 2e-3."""
    over = {**base, "method.name": "surrogate", "trainer.steps_per_epoch": 0, "optim.lr": 2e-3,
            "sched.name": "none"}  # fmt: skip
    exp = build(api.resolve(recipe, over))
    for epoch in range(epochs):
        for batch in exp.task.batches(epoch):
            exp.state, _ = exp.method.step(exp.state, batch.data)
    return {k: v.clone() for k, v in exp.model.state_dict().items()}


def layer_cosines(recipe: str, over: dict[str, Any], warm: dict[str, torch.Tensor],
                  batches: int, by: str = "layer",
                  step: float = 0.0) -> tuple[dict[str, float], dict[str, float], float,
                                              dict[str, tuple[float, float]]]:  # fmt: skip
    """Mean per-layer (``by='param'``: per-parameter) cosine of the method's estimate with the
    surrogate gradient, the mean norm ratio (estimate / surrogate gradient), the seconds per
    generation and, with ``step`` > 0, per group the change of the hard-spike network's own
    loss on those batches when its tensors step by ``step`` of their norm against the summed
    estimate, and against the summed surrogate gradient (which direction descends)."""
    exp = build(api.resolve(recipe, over))
    exp.model.load_state_dict(warm)
    names = {id(p): n for n, p in exp.model.named_parameters()}
    sums: dict[str, float] = {}
    norms: dict[str, float] = {}
    seconds = 0.0
    method, state = exp.method, exp.state
    data: list[Any] = []
    est_sum: dict[int, torch.Tensor] = {}
    true_sum: dict[int, torch.Tensor] = {}
    for i, batch in enumerate(exp.task.batches(0)):
        if i >= batches:
            break
        data.append(batch.data)
        state.model.train()
        gen = Generation(batch.data, [p for _, p in perturbed(state.model)])
        t0 = time.perf_counter()
        method.centre(state, gen)  # type: ignore[attr-defined]
        gen.source = method.ask(state, gen)  # type: ignore[attr-defined]
        gen.fitness = method.evaluate(state, gen)  # type: ignore[attr-defined]
        estimate = method.tell(state, gen)  # type: ignore[attr-defined]
        seconds += time.perf_counter() - t0
        true = method.objective.gradient(state.model, gen.batch)  # type: ignore[attr-defined]
        groups: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for p, e, g in zip(gen.params, estimate, true):
            est_sum[id(p)] = est_sum.get(id(p), 0 * e) + e
            true_sum[id(p)] = true_sum.get(id(p), 0 * g) + g
            layer = group_of(names[id(p)], by)
            a, b = groups.setdefault(layer, ([], []))
            a.append(e)
            b.append(g)
        for layer, (a, b) in groups.items():
            sums[layer] = sums.get(layer, 0.0) + cosine(a, b) / batches
            ratio = _norm(a) / max(_norm(b), 1e-30)
            norms[layer] = norms.get(layer, 0.0) + ratio / batches
    descent: dict[str, tuple[float, float]] = {}
    if step > 0:
        params = [p for _, p in perturbed(state.model)]
        objective = method.objective  # type: ignore[attr-defined]

        def loss_after(moves: dict[int, torch.Tensor]) -> float:
            with torch.no_grad():
                for p in params:
                    p.add_(moves.get(id(p), 0 * p))
                loss = sum(objective.centre(state.model, b)["loss"] for b in data) / len(data)
                for p in params:
                    p.sub_(moves.get(id(p), 0 * p))
            return float(loss)

        base_loss = loss_after({})
        for group in sums:
            members = [p for p in params if group_of(names[id(p)], by) == group]
            pair = []
            for direction in (est_sum, true_sum):
                moves = {id(p): -step * p.norm() * direction[id(p)]
                         / direction[id(p)].norm().clamp_min(1e-30) for p in members}  # fmt: skip
                pair.append(loss_after(moves) - base_loss)
            descent[group] = (pair[0], pair[1])
    return sums, norms, seconds / batches, descent


def group_of(name: str, by: str) -> str:
    """A parameter's group: itself (``by='param'``) or its layer, ``layers.<i>``."""
    return name if by == "param" else ".".join(name.split(".")[:2])


def _norm(parts: list[torch.Tensor]) -> float:
    """The norm of a layer's parameters taken together."""
    return float(sum(p.double().pow(2).sum() for p in parts)) ** 0.5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS,
                    help="name=key=value,key=value ... (on top of the recipe)")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], help="key=value for every run")
    ap.add_argument("--warm-epochs", type=int, default=3)
    ap.add_argument("--batches", type=int, default=8, help="generations per variant")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads")
    ap.add_argument("--by", choices=("layer", "param"), default="layer",
                    help="compare per layer or per parameter tensor")  # fmt: skip
    ap.add_argument("--descent", type=float, default=0.0, metavar="STEP",
                    help="also step each group by STEP of its norm against the summed estimate "
                    "and the summed surrogate gradient, and print the loss change")  # fmt: skip
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = settings(",".join(args.set))
    warm = warm_weights(args.recipe, base, args.warm_epochs)
    results: dict[str, Any] = {}
    for variant in args.variants:
        name, _, text = variant.partition("=")
        cos, norm, sec, descent = layer_cosines(
            args.recipe, {**base, **settings(text)}, warm, args.batches, args.by, args.descent
        )
        results[name] = {"cosines": cos, "norm_ratios": norm, "seconds_per_generation": sec,
                         "descent": descent, "settings": text}  # fmt: skip
        print(f"{name}: {sec * 1000:.0f} ms/generation", file=sys.stderr, flush=True)
    layers = sorted({layer for r in results.values() for layer in r["cosines"]})
    rows = [
        [name, *(f"{r['cosines'].get(layer, float('nan')):.3f}" for layer in layers),
         f"{r['seconds_per_generation'] * 1000:.0f}"]
        for name, r in results.items()
    ]  # fmt: skip
    env = environment(("torch", "spikeopt"))
    print(f"# per-{args.by} cosine with the surrogate gradient: {args.recipe}, {args.warm_epochs} "
          f"BPTT epochs of warm-up, mean over {args.batches} batches; torch "
          f"{env['versions']['torch']}, {env['torch_threads']} thread(s)\n")  # fmt: skip
    print(markdown_table(["variant", *layers, "ms / generation"], rows))
    # the estimate's scale matters to Adam only against its epsilon, but it shows what a
    # credit does: an unbiased estimate is larger than the gradient, a projection smaller
    ratios = [[name, *(f"{r['norm_ratios'].get(layer, float('nan')):.3g}" for layer in layers)]
              for name, r in results.items()]  # fmt: skip
    print(f"\n# norm of the estimate / norm of the surrogate gradient, per {args.by}\n")
    print(markdown_table(["variant", *layers], ratios))
    if args.descent > 0:
        print(
            f"\n# loss change after a step of {args.descent} of each {args.by}'s norm against "
            "the estimate / against the surrogate gradient (negative: it descends)\n"
        )
        steps = [[name, *(" / ".join(f"{v:+.4f}" for v in r["descent"][layer])
                          for layer in layers)] for name, r in results.items()]  # fmt: skip
        print(markdown_table(["variant", *layers], steps))
    if args.json:
        write_json(args.json, {"env": env, "recipe": args.recipe, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
