"""``spikeopt list | show | run | export | ...``: the command line over :mod:`spikeopt.api`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import spikeopt
from spikeopt import api
from spikeopt import compare as cmp
from spikeopt import config as C
from spikeopt import diagnose as dg
from spikeopt.compare import VARIANTS
from spikeopt.diagnose import CHECKS
from spikeopt.export import add_parser as add_export_parser
from spikeopt.methods import METHODS
from spikeopt.recipes import APPLICATIONS, get_recipe, list_recipes
from spikeopt.report import add_parser as add_report_parser
from spikeopt.tasks.datasets import DataError
from spikeopt.train.experiment import used_sections
from spikeopt.train.outputs import FolderTaken
from spikeopt.tune.command import add_parser as add_tune_parser


def _list(args: argparse.Namespace) -> int:
    filters = {k: v for k, v in (("method", args.method), ("application", args.application)) if v}
    rows = list_recipes(**filters)
    if not rows:
        wanted = " and ".join(f"{k}={v}" for k, v in filters.items())
        hint = f"; run another recipe with method.name={args.method}" if args.method else ""
        print(f"no recipe has {wanted}{hint} (`spikeopt list` shows all)")
        return 0
    w = max((len(r.name) for r in rows), default=4)
    print(f"{'recipe':<{w}}  {'application':<12}  {'method':<10}  architecture")
    for r in rows:
        print(f"{r.name:<{w}}  {r.application:<12}  {r.method:<10}  {r.architecture}")
        if args.verbose:
            print(f"{'':<{w}}  {r.summary}")
    return 0


def _show(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.recipe)
    cfg = api.resolve(args.recipe, C.parse_overrides(args.overrides), args.config)
    print(f"# {recipe.name}: {recipe.summary}")
    used = used_sections(cfg)
    hidden = 0
    for key, (value, doc) in C.key_docs(cfg).items():
        if args.all or key.split(".")[0] in used:
            print(f"{key} = {json.dumps(value)}    # {doc}")
        else:
            hidden += 1
    if hidden:
        print(f"# {hidden} keys of other tasks and methods not shown "
              f"(spikeopt show {args.recipe} --all)")  # fmt: skip
    return 0


def _run(args: argparse.Namespace) -> int:
    overrides = C.parse_overrides(args.overrides)
    if args.seed is not None:
        overrides["trainer.seed"] = args.seed
    if args.resume and args.config:
        raise C.ConfigError(
            f"--resume {args.resume} continues the run with its own config.yaml; drop "
            "--config (a resume may only change where it runs and, without a schedule, its "
            "length, given as key=value)"
        )
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise C.ConfigError(
            f"--resume {args.resume} writes to its own folder; drop --out {args.out}"
        )
    chosen = args.resume or args.out
    for attempt in range(5):
        out = chosen or str(api.default_out(args.recipe))
        args.chosen_out = out  # for the interrupt message
        try:
            summary = api.run(
                args.recipe,
                overrides,
                args.config,
                out,
                bool(args.resume),
                args.quiet,
                sessions=args.sessions,
                workers=args.workers,
            )
            break
        except FolderTaken:
            # a run started in the same second took the default name: take the next one
            if chosen or attempt == 4:
                raise
    if "test_bpc" in summary:  # language
        print(
            f"test bits per character {summary['test_bpc']:.4f} (best "
            f"{summary['best_test_bpc']:.4f}) after {summary['iterations']} steps in "
            f"{summary['wall_s']:.1f} s"
        )
    elif "test_acc" in summary:
        print(
            f"test accuracy {summary['test_acc']:.4f} (best {summary['best_test_acc']:.4f}) "
            f"after {summary['iterations']} steps in {summary['wall_s']:.1f} s"
        )
    elif "success_rate" in summary:  # control: the session metrics beside the baselines
        keys = ("success_rate", "success_rate_min", "success_rate_max", "last30_steps_ratio",
                "eval_return", "random_success_rate", "greedy_success_rate", "wall_s")  # fmt: skip
        print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    else:
        print(json.dumps(summary, indent=2))
    print(f"outputs: {out}")
    return 0 if summary.get("ok", True) else 1


def _compare(args: argparse.Namespace) -> int:

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.out or f"runs/compare-{args.recipe}")
    table = cmp.compare(
        args.recipe,
        methods,
        args.seeds,
        out,
        C.parse_overrides(args.overrides),
        cmp.parse_method_overrides(args.set or [], methods),
        args.config,
        quiet=not args.verbose,
    )
    print(cmp.format_table(table, " ".join([args.recipe, *args.overrides])))
    print(f"outputs: {out}")
    return 0


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _diagnose(args: argparse.Namespace) -> int:

    cfg = api.resolve(args.recipe, C.parse_overrides(args.overrides), args.config)
    names = [c.strip() for c in args.checks.split(",") if c.strip()]
    checks = [dg.get_check(n) for n in names]  # every name is checked before anything runs
    budget: dict[str, dict[str, Any]] = {
        "overfit-batch": {"steps": args.steps},
        "backprop-sanity": {"epochs": args.epochs},
        "grad-quality": {
            "populations": [int(p) for p in _floats(args.populations)],
            "sigmas": _floats(args.sigmas),
        },
    }
    out = Path(args.out or f"runs/diagnose-{args.recipe}")
    failed = 0
    for name, check in zip(names, checks):
        finding = check(cfg, **budget.get(name, {}))
        dg.write(finding, out)
        print(f"{name:<16} {'ok  ' if finding.ok else 'FAIL'}  {finding.verdict}", flush=True)
        failed += not finding.ok
    print(f"outputs: {out} (one CSV and one PNG per check)")
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``spikeopt`` command."""
    p = argparse.ArgumentParser(prog="spikeopt", description="Train spiking neural networks.")
    p.add_argument("--version", action="version", version=f"spikeopt {spikeopt.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list recipes")
    ls.add_argument("--method", choices=list(METHODS), help="recipes trained by this method")
    ls.add_argument("--application", choices=APPLICATIONS, help="recipes of this application")
    ls.add_argument("-v", "--verbose", action="store_true", help="with one-line summaries")
    ls.set_defaults(fn=_list)
    RECIPE_HELP = "a recipe name (spikeopt list shows them, with what each trains)"
    sh = sub.add_parser("show", help="print a recipe's resolved config, one documented key a line")
    sh.add_argument("recipe", help=RECIPE_HELP)
    sh.add_argument("overrides", nargs="*", metavar="key=value")
    sh.add_argument("--config", help="YAML file applied before the overrides")
    sh.add_argument("--all", action="store_true",
                    help="every key, also those of other tasks and methods")  # fmt: skip
    sh.set_defaults(fn=_show)
    rn = sub.add_parser("run", help="train a recipe")
    rn.add_argument("recipe", help=RECIPE_HELP)
    rn.add_argument("overrides", nargs="*", metavar="key=value")
    rn.add_argument("--config", help="YAML file applied before the overrides")
    rn.add_argument("--out", help="output folder (default runs/<recipe>-<time>)")
    rn.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    rn.add_argument("--seed", type=int, help="shorthand for trainer.seed=N")
    rn.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    rn.add_argument("--sessions", type=int, default=1, help="run N seeds (seed, seed+1, ...)")
    rn.add_argument("--workers", type=int, default=0, help="processes for --sessions (0 = cores)")
    rn.set_defaults(fn=_run)
    add_tune_parser(sub)  # Ray is imported only once a search runs
    add_export_parser(sub)  # spikeopt.export: state_dict or NIR of a run's model
    cp = sub.add_parser("compare", help="several methods on one recipe, N seeds, one table")
    cp.add_argument("recipe", help=RECIPE_HELP)
    cp.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every method")
    compared = ", ".join(dict.fromkeys([*METHODS, *VARIANTS]))
    cp.add_argument("--methods", default="surrogate,es,hybrid,hybrid-norm,guided-es",
                    help=f"comma-separated, of: {compared}")  # fmt: skip
    cp.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method")
    cp.add_argument("--set", action="append", metavar="METHOD:key=value", help="one method only")
    cp.add_argument("--config", help="YAML file applied before the overrides")
    cp.add_argument("--out", help="output folder (default runs/compare-<recipe>); reruns resume")
    cp.add_argument("--verbose", action="store_true", help="per-epoch lines of every run")
    cp.set_defaults(fn=_compare)
    dg = sub.add_parser("diagnose", help="checks with one-line verdicts, CSV and PNG each")
    dg.add_argument("recipe", help=RECIPE_HELP)
    dg.add_argument("overrides", nargs="*", metavar="key=value")
    dg.add_argument(
        "--checks",
        default="forward,subset,activity,overfit-batch,backprop-sanity,grad-quality,encoders",
        help=f"comma-separated, of: {', '.join(CHECKS)}",
    )
    dg.add_argument("--config", help="YAML file applied before the overrides")
    dg.add_argument("--out", help="output folder (default runs/diagnose-<recipe>)")
    dg.add_argument("--steps", type=int, default=40, help="overfit-batch: steps per method")
    dg.add_argument("--epochs", type=int, default=3, help="backprop-sanity: BPTT epochs")
    dg.add_argument("--populations", default="16,64,256", help="grad-quality: populations")
    dg.add_argument("--sigmas", default="0.01,0.05,0.2", help="grad-quality: sigmas")
    dg.set_defaults(fn=_diagnose)
    add_report_parser(sub)  # tbparse is imported only once a report is read
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spikeopt`` console script."""
    p = parser()
    args, extra = p.parse_known_args(argv)
    # key=value overrides may also follow an option (`run R --config F a=1`): argparse stops
    # collecting a positional list at the first option, so gather the rest here
    if extra and hasattr(args, "overrides") and all("=" in e and e[0] != "-" for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.fn(args))
    except (C.ConfigError, DataError, FileNotFoundError) as err:
        print(f"spikeopt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = getattr(args, "chosen_out", None)
        hint = f"--resume {where}" if where else "--resume <its runs/ folder>"
        print(f"spikeopt: interrupted; continue with {hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
