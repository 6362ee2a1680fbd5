"""Population evaluation (ES): members/s of the reference network, batched against the loop.

Reference network (shared/DESIGN.md): fully connected 784-256-10 LIF, T=25, batch 128, direct
encoding (the same float input at every step: a stride-0 time axis via ``expand``). Fitness is
``-cross_entropy(output spike counts)`` on one shared minibatch, as in the ``es`` method. A
population is ``P`` members ``theta + sigma * eps`` (antithetic pairs) whose noise comes from
``spikeopt.population.Noise``, so every variant evaluates *the same members*.

Variants, measured in one process with their timing windows interleaved (_common.py):

* ``loop``: the baseline a user writes -- for each member, materialise its weights and run the
  model itself (``functional_call``, ``no_grad``). One row per noise kind (full, low-rank,
  table).
* ``vmap``: ``torch.func.vmap(functional_call)`` over chunks of materialised members.
* ``evotorch``: EvoTorch's vectorized ``Problem`` (``@vectorized`` fitness on the (P, L)
  population, networks run through ``make_functional_module`` + ``vmap``, its documented path).
* ``spikeopt``: ``population.evaluate``, low-rank (rank 1), full-rank and full-rank from the
  shared noise table (``es.mode=table``), automatic chunks, and low-rank with explicit chunk
  sizes. A table row's memory counts its table.

spikeopt's model cannot run under ``vmap`` (its fused LIF loop and spike function are
``autograd.Function`` s without ``setup_context``), so ``vmap`` and ``evotorch`` run
:class:`VmapSNN`, a twin with the same parameter names and the same float operations in the
same order. Before timing, every variant's fitness is compared with the loop's on the same
members. Also measured: peak memory per generation and the share of an ES step (evaluate +
estimate) spent generating the noise. Rates are wall-clock; with one thread the own-CPU-time
rates are reported beside them, as they barely move when other jobs share the machine.

    OMP_NUM_THREADS=1 .venv-bench/bin/python bench/population.py --threads 1 [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Rate,
    environment,
    load_average,
    markdown_table,
    peak_rss_mib,
    release_memory,
    reset_peak_rss,
    rss_mib,
    wait_until_quiet,
    window,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("spikeopt") is None:  # not pip-installed: use the work tree
    sys.path.insert(0, str(REPO / "src"))

from spikeopt.config import Config  # noqa: E402
from spikeopt.functional.loss import Loss  # noqa: E402
from spikeopt.nn import build_model  # noqa: E402
from spikeopt.population import (  # noqa: E402
    PAIRS_PER_BLOCK,
    Noise,
    Perturbation,
    chunk_size,
    estimate,
    evaluate,
    get_shaping,
    materialize,
    perturbed,
)
from spikeopt.population.evaluate import DEFAULT_MEMORY_MB, members_per_pass  # noqa: E402
from spikeopt.population.noise import drop_tables  # noqa: E402

N_IN, N_HID, N_OUT, STEPS_T, BATCH = 784, 256, 10, 25, 128
SIGMA = 0.05  # es.sigma's default
MODES = ("lowrank", "full", "table")  # table: full-rank noise read from a shared table
CHUNKS = (16, 32, 64, 128)  # explicit chunk sizes of the low-rank chunk-effect rows
PACKAGES = ("torch", "evotorch", "numpy", "spikeopt")
LOSS = Loss("ce_count")


def reference_model(seed: int) -> nn.Module:
    """The reference SNN from the config API (defaults: tau 20, threshold 1, subtract reset)."""
    torch.manual_seed(seed)
    cfg = Config()
    cfg.model.arch, cfg.model.hidden, cfg.model.readout = "mlp", [N_HID], "lif"
    return build_model(cfg, input_shape=(N_IN,), n_classes=N_OUT).eval()


class _TwinLayer(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)


class VmapSNN(nn.Module):
    """The reference SNN in ops ``vmap`` accepts; same parameter names as spikeopt's model.

    Per layer and step: ``u = I + beta v``, ``s = 1[u >= 1]``, ``v = u - s`` -- the same ops
    in the same order as spikeopt's fused loop, so the spikes agree bit for bit. A static
    input's current is computed once, as in spikeopt (what any user would do).
    """

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_TwinLayer(N_IN, N_HID), _TwinLayer(N_HID, N_OUT)])
        self.beta = beta

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x (B, T, 784) -> spikes and membranes (B, T, N) of both layers."""
        spikes, mems, h, static = [], [], x, x.stride(1) == 0
        for layer in self.layers:
            cur = layer.fc(h[:, 0] if static else h)
            v, s_seq, v_seq = torch.zeros_like(cur if static else cur[:, 0]), [], []
            for t in range(STEPS_T):
                u = torch.add(cur if static else cur[:, t], v, alpha=self.beta)
                s = (u >= 1.0).to(u.dtype)
                v = torch.sub(u, s, alpha=1.0)
                s_seq.append(s)
                v_seq.append(v)
            h, static = torch.stack(s_seq, 1), False
            spikes.append(h)
            mems.append(torch.stack(v_seq, 1))
        return spikes, mems


# --- variants: each maps a Perturbation to fitness (P,) ------------------------------------

Evaluator = Callable[[nn.Module, Perturbation, Tensor, Tensor], Tensor]


def loop_fitness(
    model: nn.Module, pert: Perturbation, x: Tensor, y: Tensor, loss: Loss = LOSS
) -> Tensor:
    """The naive loop: each member's weights materialised, then the model itself runs."""
    named = perturbed(model)
    noise = Noise([p for _, p in named], pert)
    out = torch.empty(pert.population, dtype=torch.float64)
    with torch.no_grad():
        for m in range(pert.population):
            member = noise.members(m, m + 1)
            params = {n: member.weights(p)[0] for n, p in named}
            spikes, mems = functional_call(model, params, (x,))
            out[m] = -loss(spikes, mems, y)[0].double()
    return out


def chunk_weights(named: list[tuple[str, nn.Parameter]], noise: Noise, m0: int, m1: int):
    """Materialised member weights of members m0..m1-1, by name, each (c, *p.shape)."""
    member = noise.members(m0, m1)
    return {n: member.weights(p) for n, p in named}


def make_vmap(twin: VmapSNN, chunk: int) -> Evaluator:
    """``vmap(functional_call(twin))`` over chunks of ``chunk`` materialised members."""

    def run(model: nn.Module, pert: Perturbation, x: Tensor, y: Tensor) -> Tensor:
        named = perturbed(model)
        noise = Noise([p for _, p in named], pert)
        out = torch.empty(pert.population, dtype=torch.float64)
        call = vmap(lambda params: functional_call(twin, params, (x,)))
        with torch.no_grad():
            for m0 in range(0, pert.population, chunk):
                m1 = min(m0 + chunk, pert.population)
                spikes, mems = call(chunk_weights(named, noise, m0, m1))
                out[m0:m1] = -LOSS(spikes, mems, y)[0].double()
        return out

    return run


def make_evotorch(twin: VmapSNN, chunk: int, x: Tensor, y: Tensor) -> Evaluator:
    """EvoTorch's vectorized Problem; the population is a (P, L) SolutionBatch."""
    from evotorch import Problem, SolutionBatch
    from evotorch.decorators import vectorized
    from evotorch.neuroevolution.net import make_functional_module

    fnet = make_functional_module(twin, disable_autograd_tracking=True)
    batched = vmap(fnet, in_dims=(0, None))

    @vectorized
    def fitness(solutions: Tensor) -> Tensor:  # (n, L) -> (n,); chunked to bound memory
        parts = []
        for i in range(0, solutions.shape[0], chunk):
            spikes, mems = batched(solutions[i : i + chunk], x)
            parts.append(-LOSS(spikes, mems, y)[0])
        return torch.cat(parts)

    problem = Problem(
        "max", fitness, solution_length=fnet.parameter_length, initial_bounds=(-1.0, 1.0),
        dtype=torch.float32, device="cpu",
    )  # fmt: skip

    def run(model: nn.Module, pert: Perturbation, x_: Tensor, y_: Tensor) -> Tensor:
        named = perturbed(model)
        noise = Noise([p for _, p in named], pert)
        batch = SolutionBatch(problem, popsize=pert.population, empty=True)
        with torch.no_grad():
            for m0 in range(0, pert.population, chunk):  # the members, as flat vectors
                m1 = min(m0 + chunk, pert.population)
                w = chunk_weights(named, noise, m0, m1)
                flat = torch.cat([t.flatten(1) for t in w.values()], 1)
                batch.set_values(flat, solutions=slice(m0, m1))
        problem.evaluate(batch)
        return batch.evals[:, 0].double()

    return run


def make_spikeopt(chunk: int) -> Evaluator:
    """``population.evaluate`` (``chunk=0``: automatic sizing)."""

    def run(model: nn.Module, pert: Perturbation, x: Tensor, y: Tensor) -> Tensor:
        return evaluate(model, pert, (x, y), LOSS, chunk=chunk)

    return run


@dataclass
class Timing:
    """Windows of one timed function: wall-clock and own-CPU-time rates, others' load."""

    wall: Rate = field(default_factory=Rate)
    cpu: Rate = field(default_factory=Rate)
    others: list[float] = field(default_factory=list)

    def add(self, fn: Callable[[], object], steps: int, scale: float = 1.0) -> None:
        """Time ``steps`` calls of ``fn`` (one window); rates are multiplied by ``scale``.

        The CPU-time rate counts only this process's CPU seconds: with one thread it is what
        the work costs, whatever share of a core the scheduler gave us -- on a machine other
        jobs keep busy it is far steadier than the wall-clock rate (with more threads it also
        counts spinning OpenMP workers, so it is reported for one thread only).
        """
        c0 = time.process_time()
        rate, busy = window(fn, steps)
        self.wall.windows.append(rate * scale)
        self.cpu.windows.append(steps * scale / max(time.process_time() - c0, 1e-9))
        self.others.append(busy)


@dataclass
class Variant:
    """One measured row: how it evaluates, which noise it sees, and what was measured."""

    name: str
    mode: str  # 'full' | 'lowrank' | 'table'
    run: Evaluator
    chunk: str
    note: str = ""
    timing: dict[int, Timing] = field(default_factory=dict)
    mem: dict[int, float] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""


def build_variants(model: nn.Module, x: Tensor, y: Tensor, population: int) -> list[Variant]:
    """Every row; vmap and EvoTorch use the chunk spikeopt picks automatically at ``population``."""
    beta = float(model.layers[0].neuron.params().beta)
    twin = VmapSNN(beta)
    if [n for n, _ in twin.named_parameters()] != [n for n, _ in perturbed(model)]:
        raise RuntimeError("VmapSNN's parameters no longer mirror the reference model's")
    auto = chunk_size(model, x, population, 1024.0)
    rows = [
        Variant("loop", "full", loop_fitness, "1"),
        Variant("loop", "lowrank", loop_fitness, "1"),
        Variant("loop", "table", loop_fitness, "1"),
        Variant("vmap + functional_call", "full", make_vmap(twin, auto), str(auto)),
        Variant("spikeopt", "lowrank", make_spikeopt(0), "auto"),
        Variant("spikeopt", "full", make_spikeopt(0), "auto"),
        Variant("spikeopt", "table", make_spikeopt(0), "auto"),
    ]
    rows += [Variant("spikeopt", "lowrank", make_spikeopt(c), str(c)) for c in CHUNKS]
    try:
        evo = make_evotorch(twin, auto, x, y)
        rows.insert(3, Variant("EvoTorch vectorized", "full", evo, str(auto)))
    except ImportError as e:
        rows.insert(3, Variant("EvoTorch vectorized", "full", loop_fitness, "—", status="skipped",
                               reason=f"{type(e).__name__}: {e}"))  # fmt: skip
    return rows


# --- correctness before timing ------------------------------------------------------------


def fitness_of(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor) -> float:
    """Fitness of one parameter set, through the model itself."""
    with torch.no_grad():
        spikes, mems = functional_call(model, params, (x,))
    return -float(LOSS(spikes, mems, y)[0])


def check(variants: list[Variant], model: nn.Module, x: Tensor, y: Tensor, args) -> dict:
    """Fitness of every variant against the loop's on the same members (generation 0).

    Also: ``population.materialize`` members run through the model equal the loop's and
    spikeopt's fitness for the first ``--check-members`` members.
    """
    p, seed, out = args.check_population, args.seed, {}
    perts = {m: Perturbation(p, SIGMA, 1, m, seed, 0) for m in MODES}
    loops = {m: loop_fitness(model, perts[m], x, y) for m in perts}
    with torch.no_grad():
        spikes, _ = model(x)
    out["centre"] = {"hidden_rate": float(spikes[0].mean()), "out_rate": float(spikes[1].mean()),
                     "loop_fitness_std": {m: float(f.std()) for m, f in loops.items()}}  # fmt: skip
    for v in variants:
        if v.status != "ok":
            continue
        try:
            f = v.run(model, perts[v.mode], x, y)
        except Exception as e:  # a broken variant must not hide the others
            traceback.print_exc()
            v.status, v.reason = "FAILED", f"{type(e).__name__}: {e}"
            continue
        diff = (f - loops[v.mode]).abs()
        v_out = {"max_abs_diff": float(diff.max()), "equal": float((diff == 0).double().mean())}
        if v.name == "spikeopt":  # materialised members through the plain model
            sub = range(args.check_members)
            mat = [fitness_of(model, materialize(model, perts[v.mode], m), x, y) for m in sub]
            ref = torch.tensor(mat, dtype=torch.float64)
            v_out["materialize_vs_loop"] = float((ref - loops[v.mode][: len(mat)]).abs().max())
            v_out["materialize_vs_variant"] = float((ref - f[: len(mat)]).abs().max())
        v_out["ok"] = v_out["max_abs_diff"] <= args.tolerance and v_out.get(
            "materialize_vs_variant", 0.0) <= args.tolerance  # fmt: skip
        out[f"{v.name} [{v.mode}, chunk {v.chunk}]"] = v_out
        v.note = "ok" if v_out["ok"] else "DIFF"
        v.note += f" (max |Δf| {v_out['max_abs_diff']:.1e}, {100 * v_out['equal']:.0f}% equal)"
    return out


# --- timing -------------------------------------------------------------------------------


class Generations:
    """A fresh generation index per call, so no variant replays cached noise."""

    def __init__(self, seed: int) -> None:
        self.seed, self.gen = seed, 0

    def __call__(self, population: int, mode: str) -> Perturbation:
        self.gen += 1
        return Perturbation(population, SIGMA, 1, mode, self.seed, self.gen)


def noise_pass(params: list[Tensor], pert: Perturbation, chunk: int) -> None:
    """The noise work of one ES step: every chunk's member noise as evaluate asks for it
    (``members``, whose table rows a layer may read in place), then every pair's noise block
    by block as the estimate asks for it."""
    noise, pairs = Noise(params, pert), pert.population // 2
    for m0 in range(0, pert.population, chunk):
        noise.members(m0, min(m0 + chunk, pert.population))
    noise = Noise(params, pert)
    for k0 in range(0, pairs, PAIRS_PER_BLOCK):
        noise.pairs(k0, min(k0 + PAIRS_PER_BLOCK, pairs))


def es_step(model: nn.Module, pert: Perturbation, x: Tensor, y: Tensor) -> None:
    """One ES iteration's population work: evaluate, shape (centered ranks), estimate."""
    f = evaluate(model, pert, (x, y), LOSS)
    estimate([p for _, p in perturbed(model)], pert, get_shaping("centered_rank")(f))


def measure(variants: list[Variant], model: nn.Module, x: Tensor, y: Tensor, args) -> dict:
    """Per population size: peak memory of one generation, then interleaved timing rounds."""
    gens, params = Generations(args.seed), [p for _, p in perturbed(model)]
    share: dict[str, Any] = {}
    for pop in args.sizes:
        steps = max(1, args.window_members // pop)
        live = [v for v in variants if v.status == "ok"]
        for v in live:  # first call at this size: also its warm-up
            drop_tables()  # a table variant's peak counts its table
            release_memory()
            reset_peak_rss()
            rss0 = rss_mib()
            v.run(model, gens(pop, v.mode), x, y)
            v.mem[pop] = peak_rss_mib() - rss0
        extra = {f"{kind} {mode}": Timing() for kind in ("noise", "step")
                 for mode in MODES}  # fmt: skip
        for r in range(args.repeats):
            print(f"P={pop}: round {r + 1}/{args.repeats}", file=sys.stderr, flush=True)
            for v in live:
                fn = lambda v=v, n=pop: v.run(model, gens(n, v.mode), x, y)  # noqa: E731
                v.timing.setdefault(pop, Timing()).add(fn, steps, scale=pop)
            for key, t in extra.items():
                kind, mode = key.split()
                if kind == "noise":
                    chunk = members_per_pass(model, x, gens(pop, mode), 0, DEFAULT_MEMORY_MB)
                    fn = lambda m=mode, n=pop, c=chunk: noise_pass(params, gens(n, m), c)  # noqa: E731
                    n = 5
                else:
                    fn = lambda m=mode, n=pop: es_step(model, gens(n, m), x, y)  # noqa: E731
                    n = steps
                t.add(fn, n)
        for mode in MODES:
            noise, step = extra[f"noise {mode}"], extra[f"step {mode}"]
            share[f"{mode} P={pop}"] = {  # the noise of evaluate and of estimate
                "noise_pass_s": 1 / noise.wall.median, "es_step_s": 1 / step.wall.median,
                "noise_share": step.wall.median / noise.wall.median,
                "noise_pass_cpu_s": 1 / noise.cpu.median, "es_step_cpu_s": 1 / step.cpu.median,
                "noise_share_cpu": step.cpu.median / noise.cpu.median,
                "others_cpu": max(noise.others + step.others),
            }  # fmt: skip
    return share


# --- report -------------------------------------------------------------------------------


def _loop_of(variants: list[Variant], mode: str) -> Variant | None:
    return next((v for v in variants if v.name == "loop" and v.mode == mode and v.timing), None)


def ratio(v: Variant, base: Variant | None, pop: int, cpu: bool) -> float:
    """Median rate of ``v`` over the median rate of ``base`` at population ``pop``."""
    if base is None:
        return float("nan")
    get = (lambda u: u.timing[pop].cpu.median) if cpu else (lambda u: u.timing[pop].wall.median)
    return get(v) / get(base)


def table(variants: list[Variant], sizes: list[int]) -> str:
    """Members/s per population size, ratio to the loop over the same members, memory, check."""
    header = ["variant", "noise", "chunk"]
    for pop in sizes:
        header += [f"P={pop} members/s", f"P={pop} × loop", f"P={pop} × loop (CPU time)"]
    header += ["peak ΔRSS MiB (" + " / ".join(f"P={p}" for p in sizes) + ")", "others' CPU",
               "fitness vs loop"]  # fmt: skip
    rows: list[list[object]] = []
    for v in variants:
        row: list[object] = [v.name, v.mode, v.chunk]
        if v.status != "ok":
            rows.append(row + ["—"] * (len(header) - 4) + [v.status])
            continue
        base = _loop_of(variants, v.mode)
        for pop in sizes:
            row += [f"{v.timing[pop].wall.median:.1f}", f"{ratio(v, base, pop, False):.2f}×",
                    f"{ratio(v, base, pop, True):.2f}×"]  # fmt: skip
        busiest = max(b for p in sizes for b in v.timing[p].others)
        row += [" / ".join(f"{v.mem[p]:.0f}" for p in sizes), f"{busiest:.2f}", v.note]
        rows.append(row)
    return markdown_table(header, rows)


def share_table(share: dict[str, Any]) -> str:
    """Noise generation against one ES step's population work (wall clock and CPU time)."""
    rows = [[k.split()[0], k.split()[1], f"{1e3 * s['noise_pass_s']:.1f}",
             f"{1e3 * s['es_step_s']:.0f}", f"{100 * s['noise_share']:.1f}%",
             f"{100 * s['noise_share_cpu']:.1f}%", f"{s['others_cpu']:.2f}"]
            for k, s in share.items()]  # fmt: skip
    header = ["noise", "population", "noise of a step: members + estimate (ms)",
              "ES step: evaluate + estimate (ms)", "noise share of the step", "same, CPU time",
              "others' CPU"]  # fmt: skip
    return markdown_table(header, rows)


def floors(variants: list[Variant], share: dict[str, Any], sizes: list[int]) -> list[str]:
    """The issue's floors, met or not, from this run (speed: wall clock and CPU time)."""
    out, big, full_loop = [], max(sizes), _loop_of(variants, "full")
    for v in variants:
        if v.name != "spikeopt" or v.chunk != "auto" or v.status != "ok":
            continue
        loop = _loop_of(variants, v.mode)
        same, cpu = ratio(v, loop, big, False), ratio(v, loop, big, True)
        verdict = "met" if same >= 3.5 else "NOT met"
        out.append(f"spikeopt {v.mode} at P={big}: {same:.2f}× the loop over the same members "
                   f"({cpu:.2f}× in CPU time; {ratio(v, full_loop, big, False):.2f}× the "
                   f"full-rank loop) -- floor >= 3.5×: {verdict}")  # fmt: skip
        mem = max(v.mem.values())
        out.append(f"spikeopt {v.mode} peak memory increase {mem:.0f} MiB -- floor <= 100 MB: "
                   f"{'met' if mem <= 100 else 'NOT met'}")  # fmt: skip
    for key, s in share.items():
        ok = s["noise_share"] <= 0.05
        out.append(f"noise share {key}: {100 * s['noise_share']:.1f}% "
                   f"({100 * s['noise_share_cpu']:.1f}% in CPU time) -- floor <= 5%: "
                   f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = ap.add_argument
    add("--sizes", default="64,512", help="population sizes, comma-separated (even)")
    add("--repeats", type=int, default=3, help="interleaved timing rounds (median over them)")
    add("--window-members", type=int, default=256,
        help="members per timing window (at least one generation)")  # fmt: skip
    add("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    add("--check-population", type=int, default=64, help="population of the fitness check")
    add("--check-members", type=int, default=8, help="members checked through materialize()")
    add("--tolerance", type=float, default=1e-3, help="max |fitness difference| for 'ok'")
    add("--wait-quiet", type=float, default=0, metavar="SECONDS",
        help="first wait up to this long for other processes to leave the CPU idle")  # fmt: skip
    add("--seed", type=int, default=0, help="seed of the weights, the batch and the noise")
    add("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.wait_quiet > 0:
        print(f"waited {wait_until_quiet(args.wait_quiet):.0f} s for a quiet machine",
              file=sys.stderr)  # fmt: skip
    env = environment(PACKAGES)
    model = reference_model(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(BATCH, N_IN, generator=g).unsqueeze(1).expand(BATCH, STEPS_T, N_IN)
    y = torch.randint(0, N_OUT, (BATCH,), generator=g)
    variants = build_variants(model, x, y, max(args.sizes))
    print("checking fitness against the loop ...", file=sys.stderr, flush=True)
    checks = check(variants, model, x, y, args)
    share = measure(variants, model, x, y, args)
    env["load_average_1min_at_end"] = load_average()
    std = checks["centre"]["loop_fitness_std"]
    print(f"# population evaluation: {N_IN}-{N_HID}-{N_OUT} LIF, T={STEPS_T}, batch {BATCH}, "
          f"direct encoding, sigma {SIGMA}, rank 1\n")  # fmt: skip
    print(f"torch {env['versions']['torch']}, {env['torch_threads']} thread(s), {env['cpu']}; "
          f"{args.repeats} rounds; 1-min load average {env['load_average_1min_at_start']:.2f} "
          f"before, {env['load_average_1min_at_end']:.2f} after; centre firing rates "
          f"{checks['centre']['hidden_rate']:.3f} hidden / {checks['centre']['out_rate']:.3f} "
          f"out; fitness std over the checked members {std['full']:.4f} (full) / "
          f"{std['lowrank']:.4f} (low-rank) / {std['table']:.4f} (table)\n")  # fmt: skip
    print(table(variants, args.sizes))
    print()
    print(share_table(share))
    print()
    for line in floors(variants, share, args.sizes):
        print("- " + line)
    busiest = max((b for v in variants for t in v.timing.values() for b in t.others), default=0.0)
    if busiest > 0.1:
        print(f"\nWARNING: other processes used up to {100 * busiest:.0f}% of the machine "
              "during a timed window; absolute rates are noisy (interleaving keeps ratios "
              "fairer).")  # fmt: skip
    if args.json:
        write_json(args.json, {
            "environment": env, "args": vars(args), "checks": checks, "noise_share": share,
            "results": [{"name": v.name, "mode": v.mode, "chunk": v.chunk, "status": v.status,
                         "reason": v.reason, "check": v.note,
                         "members_per_s": {p: t.wall.windows for p, t in v.timing.items()},
                         "members_per_cpu_s": {p: t.cpu.windows for p, t in v.timing.items()},
                         "others_cpu": {p: t.others for p, t in v.timing.items()},
                         "peak_delta_rss_mib": v.mem}
                        for v in variants],
        })  # fmt: skip
    return 0 if all(v.status != "FAILED" for v in variants) else 1


if __name__ == "__main__":
    sys.exit(main())
