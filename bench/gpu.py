"""The GPU path measured in one process: BPTT throughput against SpikingJelly, ES members/s.

    .venv/bin/python bench/gpu.py [--device cuda] [--populations 512,4096,65536] [--json f]

1. **BPTT**, the reference network of bench/throughput.py (784-256-10 LIF, T=25, batch 128,
   Adam): training steps/s of plain torch, spikeopt and SpikingJelly's multi-step LIFNode, the
   same weights and data, on ``--device``. Each variant's first step is untimed; CUDA is
   synchronised around every timing window, and the median of ``--repeats`` interleaved
   windows is reported.
2. **ES**, ``population.evaluate`` on the same network (low-rank, rank 1) at each population
   size: members/s and peak GPU memory per generation (automatic chunks, sized by
   ``es.memory_mb``'s default).

bench/gpu.sh runs this beside the cuda tests and a short MNIST-1D run. ``--device cpu`` runs the
same code on the CPU (small sizes), which is how it is checked on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from population import LOSS, SIGMA, reference_model
from throughput import (
    BATCH,
    LR,
    N_IN,
    N_OUT,
    PlainNet,
    SpikeoptNet,
    SpikingJellyNet,
    reference_weights,
)

from spikeopt.population import Perturbation, evaluate


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(fn: Callable[[], Any], calls: int, device: torch.device) -> float:
    """Calls per second of ``fn`` over one window of ``calls``."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return calls / (time.perf_counter() - t0)


def bptt_variants(detach: bool) -> dict[str, Callable[[dict], torch.nn.Module]]:
    """name -> builder of the reference network on the given weights. SpikingJelly 2.0's
    LIFNode has no backend switch (cupy/triton in 0.0.0.0.x): it dispatches its own registered
    op per device, so it is one variant here."""
    return {
        "plain-torch": lambda w: PlainNet(w, detach),
        "spikeopt": lambda w: SpikeoptNet(w, detach),
        "spikingjelly": lambda w: SpikingJellyNet(w, detach),
    }


def bench_bptt(device: torch.device, steps: int, repeats: int) -> dict[str, Any]:
    """Training steps/s per variant (median of interleaved windows)."""
    w = {k: v.to(device) for k, v in reference_weights(0).items()}
    x = torch.rand(BATCH, N_IN, generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.randint(0, N_OUT, (BATCH,), generator=torch.Generator().manual_seed(2)).to(device)
    running: dict[str, Callable[[], Any]] = {}
    results: dict[str, Any] = {}
    for name, build in bptt_variants(detach=True).items():
        try:
            net = build(w).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=LR)

            def step(net: Any = net, opt: Any = opt) -> None:
                opt.zero_grad(set_to_none=True)
                net.train_loss(x, y).backward()
                opt.step()
                net.after_step()

            step()  # untimed: kernels compiled, workspaces allocated
            running[name] = step
            results[name] = {"status": "ok", "windows": []}
        except Exception as e:  # a backend that does not build here is reported, not fatal
            results[name] = {"status": "skipped", "reason": f"{type(e).__name__}: {e}"[:300]}
    for _ in range(repeats):
        for name, step in running.items():
            results[name]["windows"].append(timed_rate(step, steps, device))
    for r in results.values():
        if r["status"] == "ok":
            r["train_steps_per_s"] = statistics.median(r["windows"])
            r["samples_per_s"] = r["train_steps_per_s"] * BATCH
    ok = {k: r for k, r in results.items() if r["status"] == "ok"}
    if "spikeopt" in ok and "spikingjelly" in ok:
        rate = ok["spikeopt"]["train_steps_per_s"] / ok["spikingjelly"]["train_steps_per_s"]
        results["spikeopt_vs_spikingjelly"] = rate
    return results


def bench_es(device: torch.device, populations: list[int], repeats: int) -> dict[str, Any]:
    """Members/s and peak memory of one generation at each population size."""
    model = reference_model(0).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(BATCH, N_IN, generator=gen).to(device)
    x = x[:, None].expand(BATCH, 25, N_IN)  # direct encoding: a stride-0 time axis
    y = torch.randint(0, N_OUT, (BATCH,), generator=gen).to(device)
    out: dict[str, Any] = {}
    generation = [0]  # a fresh generation per call: no size replays another's noise
    for p in populations:

        def one(p: int = p) -> None:
            generation[0] += 1
            evaluate(model, Perturbation(p, SIGMA, 1, "lowrank", 0, generation[0]), (x, y), LOSS)

        try:
            one()  # untimed
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rates = [timed_rate(one, 1, device) * p for _ in range(repeats)]
            cuda = device.type == "cuda"
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
            out[str(p)] = {"members_per_s": statistics.median(rates), "peak_mib": peak}
        except Exception as e:  # e.g. out of memory at the largest size: say so, go on
            traceback.print_exc()
            out[str(p)] = {"status": "FAILED", "reason": f"{type(e).__name__}: {e}"[:300]}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both parts; print one JSON document (and write it to ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--populations", default="512,2048,8192,32768,65536")
    ap.add_argument("--steps", type=int, default=20, help="training steps per BPTT window")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device; run with --device cpu to check the code path",
              file=sys.stderr)  # fmt: skip
        return 2
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "bptt": bench_bptt(device, args.steps, args.repeats),
        "es": bench_es(device, [int(p) for p in args.populations.split(",")], args.repeats),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
