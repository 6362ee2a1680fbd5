"""Reference-network throughput: spikeopt against plain PyTorch and peer SNN libraries.

Reference network (shared/DESIGN.md, "the hot path"): fully connected 784-256-10 LIF,
T=25 steps, batch 128, direct encoding (the same float input at every step), Adam (lr 1e-3),
cross-entropy on output spike counts. Target dynamics, per layer and step::

    v[t] = beta * v[t-1] + I[t]          beta = exp(-dt / tau_m), tau_m = 20, dt = 1
    s[t] = H(v[t] - 1)                   fast-sigmoid surrogate, slope 25, backward
    v[t] = v[t] - s[t]                   reset by subtraction (v_rest = 0)

Each variant writes that network in its own library's idiom, as close to these dynamics as
the library allows; what it cannot match is in ``Variant.note`` and printed under the table.
Every variant starts from the *same* weights, and before timing its inference output on them
is compared with plain-torch's (firing rates, exact output-count agreement), so a variant
whose dynamics are broken shows up in the table rather than as a suspiciously fast number.

Measured per variant, in one process: training steps/s (forward + backward + Adam step) and
inference batches/s (``torch.no_grad`` forward). Every variant is first built, checked and
warmed up in turn (its first calls -- a cold ``torch.compile`` for the compiled variant --
timed apart, its peak memory noted); then all are timed in interleaved rounds, one window
per variant per round, and the median over the rounds is reported, so load from other
processes (on a shared machine) hits every variant alike. The share of the machine other
processes used during each window is recorded too.

    .venv-bench/bin/python bench/throughput.py [--only plain-torch,spikeopt] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import math
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    timed,
    wait_until_quiet,
    window,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("spikeopt") is None:  # not pip-installed yet: use the work tree
    sys.path.insert(0, str(REPO / "src"))

N_IN, N_HID, N_OUT = 784, 256, 10
STEPS_T, BATCH = 25, 128
TAU_M, DT = 20.0, 1.0
BETA = math.exp(-DT / TAU_M)  # 0.951229...
THRESHOLD = 1.0
SLOPE = 25.0  # fast-sigmoid sharpness: d spike / dv ~ 1 / (1 + SLOPE |v - threshold|)^2
LR = 1e-3
SETUP = {"n_in": N_IN, "n_hidden": N_HID, "n_out": N_OUT, "T": STEPS_T, "batch": BATCH,
         "tau_m": TAU_M, "dt": DT, "beta": BETA, "threshold": THRESHOLD,
         "surrogate_slope": SLOPE, "lr": LR}  # fmt: skip
PACKAGES = ("torch", "snntorch", "spikingjelly", "norse", "evotorch", "numpy", "spikeopt")

Weights = dict[str, Tensor]


def reference_weights(seed: int) -> Weights:
    """The initial weights every variant copies: ``nn.Linear``'s default init, seeded."""
    g = torch.Generator().manual_seed(seed)
    w = {}
    for name, (n_in, n_out) in {"1": (N_IN, N_HID), "2": (N_HID, N_OUT)}.items():
        bound = 1 / math.sqrt(n_in)
        w["w" + name] = (torch.rand(n_out, n_in, generator=g) * 2 - 1) * bound
        w["b" + name] = (torch.rand(n_out, generator=g) * 2 - 1) * bound
    return w


def load_linear(layer: nn.Linear, w: Tensor, b: Tensor, scale: float = 1.0) -> nn.Linear:
    """Copy ``scale * (w, b)`` into ``layer`` in place."""
    with torch.no_grad():
        layer.weight.copy_(w * scale)
        layer.bias.copy_(b * scale)
    return layer


class BenchNet(nn.Module):
    """What the harness needs from a variant: ``forward(x (B, 784)) -> (s_hidden, s_out)``.

    Spike tensors come back in the library's own layout; ``time_dim`` says where T is.
    """

    time_dim = 1

    def loss(self, s_out: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy on output spike counts."""
        return F.cross_entropy(s_out.sum(self.time_dim), y)

    def train_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The training step's loss (a variant may run forward and loss as one graph)."""
        _, s_out = self(x)
        return self.loss(s_out, y)

    def after_step(self) -> None:
        """Called after every training step and inference batch (SpikingJelly's reset_net)."""


# --- plain PyTorch ------------------------------------------------------------------------


class FastSigmoidSpike(torch.autograd.Function):
    """Heaviside forward; fast-sigmoid ``1 / (1 + SLOPE |x|)^2`` backward (Zenke & Ganguli)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad / (SLOPE * x.abs() + 1) ** 2


class PlainNet(BenchNet):
    """The obvious PyTorch loop: every step recomputes ``fc1(x)``, states live in locals."""

    def __init__(self, w: Weights, detach_reset: bool) -> None:
        super().__init__()
        self.fc1 = load_linear(nn.Linear(N_IN, N_HID), w["w1"], w["b1"])
        self.fc2 = load_linear(nn.Linear(N_HID, N_OUT), w["w2"], w["b2"])
        self.detach_reset = detach_reset

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        v1 = x.new_zeros(x.shape[0], N_HID)
        v2 = x.new_zeros(x.shape[0], N_OUT)
        s1_seq, s2_seq = [], []
        for _ in range(STEPS_T):
            v1 = BETA * v1 + self.fc1(x)
            s1 = FastSigmoidSpike.apply(v1 - THRESHOLD)
            v1 = v1 - THRESHOLD * (s1.detach() if self.detach_reset else s1)
            v2 = BETA * v2 + self.fc2(s1)
            s2 = FastSigmoidSpike.apply(v2 - THRESHOLD)
            v2 = v2 - THRESHOLD * (s2.detach() if self.detach_reset else s2)
            s1_seq.append(s1)
            s2_seq.append(s2)
        return torch.stack(s1_seq, 1), torch.stack(s2_seq, 1)


# --- snnTorch -----------------------------------------------------------------------------


class SnnTorchNet(BenchNet):
    """``snn.Leaky`` with the standard loop over T (``init_leaky`` per forward)."""

    def __init__(self, w: Weights, detach_reset: bool) -> None:
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        def leaky() -> nn.Module:
            # reset_delay=False applies the subtraction in the step that fired, as above;
            # snnTorch's default (True) subtracts one step later, after the decay.
            return snn.Leaky(
                beta=BETA,
                threshold=THRESHOLD,
                spike_grad=surrogate.fast_sigmoid(slope=SLOPE),
                reset_mechanism="subtract",
                reset_delay=False,
            )

        self.fc1 = load_linear(nn.Linear(N_IN, N_HID), w["w1"], w["b1"])
        self.lif1 = leaky()
        self.fc2 = load_linear(nn.Linear(N_HID, N_OUT), w["w2"], w["b2"])
        self.lif2 = leaky()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        s1_seq, s2_seq = [], []
        for _ in range(STEPS_T):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            s1_seq.append(spk1)
            s2_seq.append(spk2)
        return torch.stack(s1_seq, 1), torch.stack(s2_seq, 1)


# --- SpikingJelly -------------------------------------------------------------------------

# SJ with decay_input=False charges H = V - V / tau + X, i.e. beta = 1 - 1/tau; solve for tau.
TAU_SJ = 1.0 / (1.0 - BETA)  # 20.504...


class SpikingJellyNet(BenchNet):
    """``activation_based`` multi-step layers on a (T, B, 784) input; ``reset_net`` per step."""

    time_dim = 0

    def __init__(self, w: Weights, detach_reset: bool) -> None:
        super().__init__()
        from spikingjelly.activation_based import functional, layer, neuron, surrogate

        def lif() -> nn.Module:
            return neuron.LIFNode(
                tau=TAU_SJ,
                decay_input=False,
                v_threshold=THRESHOLD,
                v_reset=None,  # soft reset: V -= v_threshold
                # SoftSign is SJ's fast sigmoid: alpha / (2 (1 + alpha |x|)^2).
                surrogate_function=surrogate.SoftSign(alpha=SLOPE),
                detach_reset=detach_reset,
                step_mode="m",
            )

        self.fc1 = load_linear(layer.Linear(N_IN, N_HID, step_mode="m"), w["w1"], w["b1"])
        self.lif1 = lif()
        self.fc2 = load_linear(layer.Linear(N_HID, N_OUT, step_mode="m"), w["w2"], w["b2"])
        self.lif2 = lif()
        self._reset_net = functional.reset_net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_seq = x.unsqueeze(0).repeat(STEPS_T, 1, 1)  # (T, B, 784), as in SJ's tutorials
        s1 = self.lif1(self.fc1(x_seq))
        s2 = self.lif2(self.fc2(s1))
        return s1, s2

    def after_step(self) -> None:
        self._reset_net(self)


# --- Norse --------------------------------------------------------------------------------


class NorseNet(BenchNet):
    """``SequentialState`` of ``nn.Linear`` and ``LIFBoxCell`` (LIF without synaptic current).

    Norse integrates ``v += dt/tau (v_leak - v + I)``: the input is scaled by ``a = dt/tau``
    too. With ``dt/tau = 1 - beta`` the decay matches; the ``1/a`` the input then needs is
    folded into the copied weights (and so into what Adam updates).
    """

    def __init__(self, w: Weights, detach_reset: bool) -> None:
        super().__init__()
        from norse.torch import LIFBoxCell, LIFBoxParameters, SequentialState
        from norse.torch.functional.reset import reset_subtract

        def reset_subtract_detached(z: Tensor, v: Tensor, reset: Tensor, th: Tensor) -> Tensor:
            return reset_subtract(z.detach(), v, reset, th)

        a = 1.0 - BETA
        p = LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(a / DT),
            v_leak=torch.as_tensor(0.0),
            v_th=torch.as_tensor(THRESHOLD),
            v_reset=torch.as_tensor(0.0),
            method="super",
            alpha=torch.as_tensor(SLOPE),
            reset_method=reset_subtract_detached if detach_reset else reset_subtract,
        )
        self.model = SequentialState(
            load_linear(nn.Linear(N_IN, N_HID), w["w1"], w["b1"], scale=1 / a),
            LIFBoxCell(p, dt=DT),
            load_linear(nn.Linear(N_HID, N_OUT), w["w2"], w["b2"], scale=1 / a),
            LIFBoxCell(p, dt=DT),
            return_hidden=True,
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        state = None
        s1_seq, s2_seq = [], []
        for _ in range(STEPS_T):
            hidden, state = self.model(x, state)  # hidden: outputs of the four modules
            s1_seq.append(hidden[1])
            s2_seq.append(hidden[3])
        return torch.stack(s1_seq, 1), torch.stack(s2_seq, 1)


# --- spikeopt -----------------------------------------------------------------------------


def _set(obj: object, key: str, value: object) -> None:
    """Set a config field that must exist (a renamed field fails loudly, not silently)."""
    if not hasattr(obj, key):
        raise AttributeError(f"{type(obj).__name__} has no field {key!r}")
    setattr(obj, key, value)


class SpikeoptNet(BenchNet):
    """``build_model`` on the config API; input (B, T, 784) with a stride-0 time axis."""

    def __init__(self, w: Weights, detach_reset: bool, compiled: bool = False) -> None:
        super().__init__()
        from spikeopt.config import Config
        from spikeopt.functional.loss import ce_count, make_loss
        from spikeopt.methods.base import forward_loss
        from spikeopt.nn import build_model

        cfg = Config()
        for key, value in {"arch": "mlp", "hidden": [N_HID], "readout": "lif"}.items():
            _set(cfg.model, key, value)
        neuron = {
            "tau_m": TAU_M,
            "dt": DT,
            "v_threshold": THRESHOLD,
            "reset": "subtract",
            "surrogate": "fast_sigmoid",
            "alpha": SLOPE,
            "detach_reset": detach_reset,
        }
        for key, value in neuron.items():
            _set(cfg.neuron, key, value)
        model = build_model(cfg, input_shape=(N_IN,), n_classes=N_OUT)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if [tuple(m.weight.shape) for m in linears] != [(N_HID, N_IN), (N_OUT, N_HID)]:
            raise RuntimeError(f"unexpected spikeopt mlp layout: {linears}")
        load_linear(linears[0], w["w1"], w["b1"])
        load_linear(linears[1], w["w2"], w["b2"])
        self.model = model
        # Kept out of the module tree so parameters() sees each weight once. Compiled, as
        # trainer.compile does: inference runs the compiled model, training the compiled
        # forward + loss graph (spikeopt.methods.base.forward_loss).
        self.__dict__["run"] = torch.compile(model) if compiled else model
        self.__dict__["run_loss"] = torch.compile(forward_loss) if compiled else forward_loss
        self._ce_count = ce_count
        self._loss = make_loss(cfg.loss, 1)

    def expand(self, x: Tensor) -> Tensor:
        """(B, 784) -> (B, T, 784) with a stride-0 time axis (direct encoding)."""
        return x.unsqueeze(1).expand(x.shape[0], STEPS_T, x.shape[1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        spikes, _ = self.run(self.expand(x))
        return spikes[0], spikes[-1]

    def loss(self, s_out: Tensor, y: Tensor) -> Tensor:
        return self._ce_count(s_out, y)

    def train_loss(self, x: Tensor, y: Tensor) -> Tensor:
        loss, _ = self.run_loss(self.model, self._loss, self.expand(x), y)
        return loss


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One measured implementation: a builder and what differs from the target dynamics."""

    name: str
    build: Callable[[Weights, bool], BenchNet]
    note: str
    imports: tuple[str, ...] = ()  # imported up front, so import memory is nobody's peak


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "plain-torch",
        PlainNet,
        "reference: the target dynamics; spike H(v-1) with v-1 > 0; surrogate 1/(1+25|x|)^2.",
    ),
    Variant(
        "snntorch",
        SnnTorchNet,
        "Leaky(reset_delay=False) so the subtraction happens in the step that fired (the "
        "default, True, subtracts a step later, undecayed); fast_sigmoid(slope=25) = plain's "
        "surrogate; spike is v-1 > 0. Its subtraction uses the live spike, so the reset "
        "gradient is always attached (--reset-grad does not apply), and Leaky's 'avoid double "
        "reset' bookkeeping differs from the target when a post-reset membrane is still >= 1.",
        ("snntorch", "snntorch.surrogate"),
    ),
    Variant(
        "spikingjelly",
        SpikingJellyNet,
        f"LIFNode(decay_input=False, tau={TAU_SJ:.4f}) so that 1 - 1/tau = beta; SJ computes "
        "v - v/tau + x, not beta*v + x (last-bit rounding differs). Spike is v-1 >= 0. "
        "SoftSign(alpha=25), SJ's fast sigmoid, is alpha/(2(1+alpha|x|)^2): plain's shape at "
        "12.5x its scale. On CPU, LIFNode runs SJ's registered sj_lif op (a Python time loop "
        "forward, a hand-written backward).",
        ("spikingjelly.activation_based.neuron", "spikingjelly.activation_based.layer"),
    ),
    Variant(
        "norse",
        NorseNet,
        "LIFBoxCell with dt*tau_mem_inv = 1-beta. Norse scales the input by dt*tau_mem_inv "
        "too, so the copied weights are scaled by 1/(1-beta) (rounding differs, and Adam's "
        "steps are 1-beta times smaller in the other variants' units). Spike is v-1 > 0. "
        "method='super' is the fast sigmoid, but norse 1.1.0's SuperSpike ignores alpha: the "
        "surrogate is 1/(1+|x|)^2 (slope 1, not 25).",
        ("norse.torch",),
    ),
    Variant(
        "spikeopt",
        SpikeoptNet,
        "build_model mlp; fast_sigmoid(alpha=25) is 12.5/(1+25|x|)^2 (unit-area form, as SJ). "
        "Spike is v-1 >= 0. The first layer's current is computed once for the stride-0 input "
        "(the hot path the library is built around, not a dynamics difference).",
        ("spikeopt.config", "spikeopt.nn", "spikeopt.functional.loss"),
    ),
    Variant(
        "spikeopt-compiled",
        lambda w, d: SpikeoptNet(w, d, compiled=True),
        "trainer.compile's path: training runs torch.compile(forward_loss) (model and "
        "cross-entropy as one graph), inference torch.compile(model); Adam stays eager.",
        ("spikeopt.nn", "torch._inductor.compile_fx"),
    ),
)
NAMES = tuple(v.name for v in VARIANTS)
BASELINES = ("spikingjelly", "plain-torch")


# --- measurement --------------------------------------------------------------------------


def _batch_first(s: Tensor, time_dim: int) -> Tensor:
    """Spikes in (B, T, N) layout."""
    return s.transpose(0, 1) if time_dim == 0 else s


class Reference(NamedTuple):
    """plain-torch's spikes (B, T, N) and first weight gradients on the shared weights/batch."""

    s_hidden: Tensor
    s_out: Tensor
    g_fc1: Tensor
    g_fc2: Tensor


def weight_grads(net: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of the two weight matrices, found by shape."""
    by_shape = {tuple(p.shape): p.grad for p in net.parameters()}
    return by_shape.get((N_HID, N_IN)), by_shape.get((N_OUT, N_HID))


def cosine(g: Tensor | None, ref: Tensor) -> float:
    """Cosine similarity of a gradient with plain-torch's (scale-free, so surrogate scales
    and Norse's folded input scaling do not count; shapes and dynamics do)."""
    if g is None:
        return float("nan")
    return F.cosine_similarity(g.flatten(), ref.flatten(), dim=0).item()


def check_spikes(net: BenchNet, out: tuple[Tensor, Tensor], ref: Reference) -> dict:
    """Firing rates and agreement with plain-torch's spikes on the same initial weights."""
    s1, s2 = (_batch_first(s, net.time_dim) for s in out)
    counts, ref_counts = s2.sum(1), ref.s_out.sum(1)
    return {
        "hidden_rate": s1.float().mean().item(),
        "out_rate": s2.float().mean().item(),
        "hidden_spikes_equal": (s1 == ref.s_hidden).float().mean().item(),
        "out_counts_equal": (counts == ref_counts).float().mean().item(),
        "out_counts_max_abs_diff": (counts - ref_counts).abs().max().item(),
    }


@dataclass
class Running:
    """A built variant: its two timed closures and what has been measured so far."""

    variant: Variant
    infer: Callable[[], object]
    train: Callable[[], object]
    result: dict[str, Any]
    train_rate: Rate = field(default_factory=Rate)
    infer_rate: Rate = field(default_factory=Rate)
    others_cpu: list[float] = field(default_factory=list)


def prepare(
    v: Variant, w: Weights, data: tuple[Tensor, Tensor], ref: Reference, args: argparse.Namespace
) -> Running:
    """Build a variant, check its spikes, time its first calls, warm it up; note peak memory."""
    x, y = data
    release_memory()
    reset_peak_rss()
    rss0 = rss_mib()
    net = v.build(w, args.reset_grad == "detached")
    opt = torch.optim.Adam(net.parameters(), lr=LR)

    def infer() -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            out = net(x)
        net.after_step()
        return out

    def train() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = net.train_loss(x, y)
        loss.backward()
        opt.step()
        net.after_step()
        return loss.detach()

    out, first_infer = timed(infer)  # on the initial weights: the correctness check
    result: dict[str, Any] = {"status": "ok", "check": check_spikes(net, out, ref)}
    del out
    for _ in range(args.warmup):
        infer()
    loss0, first_train = timed(train)  # a cold torch.compile of the training graph, if any
    g1, g2 = weight_grads(net)  # still the first step's: taken on the initial weights
    result["check"].update(grad_cos_fc1=cosine(g1, ref.g_fc1), grad_cos_fc2=cosine(g2, ref.g_fc2))
    for _ in range(args.warmup):
        train()
    result.update(
        first_infer_s=first_infer,
        first_train_s=first_train,
        first_loss=float(loss0),
        peak_rss_mib=peak_rss_mib(),
        delta_rss_mib=peak_rss_mib() - rss0,
        n_params=sum(p.numel() for p in net.parameters()),
    )
    return Running(v, infer, train, result)


def measure_interleaved(running: list[Running], args: argparse.Namespace) -> None:
    """Time ``repeats`` rounds; each round runs one train and one infer window per variant."""
    for _ in range(args.repeats):
        for r in running:
            if r.result["status"] != "ok":
                continue
            try:
                rate, busy = window(r.train, args.steps)
                r.train_rate.windows.append(rate)
                r.others_cpu.append(busy)
                rate, busy = window(r.infer, args.infer_steps)
                r.infer_rate.windows.append(rate)
                r.others_cpu.append(busy)
            except Exception as e:  # keep the other variants going
                traceback.print_exc()
                r.result.update(status="FAILED", reason=f"{type(e).__name__}: {e}")
    for r in running:
        if r.result["status"] == "ok":
            r.result.update(
                train_steps_per_s=r.train_rate.median,
                train_windows=r.train_rate.windows,
                infer_batches_per_s=r.infer_rate.median,
                infer_windows=r.infer_rate.windows,
                others_cpu=max(r.others_cpu),
                others_cpu_windows=r.others_cpu,
            )


def verdict(c: dict) -> str:
    """'ok' when a variant's spikes agree with plain-torch closely enough to trust its timing."""
    if c["hidden_rate"] == 0 or c["out_rate"] == 0:
        return "SILENT"
    close = c["hidden_spikes_equal"] >= 0.999 and c["out_counts_equal"] >= 0.99
    return "ok" if close else "DIFF"


def table(results: dict[str, dict]) -> str:
    """The markdown table: rates, ratios against SpikingJelly and plain-torch, checks."""
    base = {b: results[b] for b in BASELINES if results.get(b, {}).get("status") == "ok"}

    def ratios(r: dict, key: str) -> list[str]:
        return [f"{r[key] / base[b][key]:.2f}×" if b in base else "—" for b in BASELINES]

    header = ["variant", "train step/s", "train vs SJ", "train vs plain", "infer batch/s",
              "infer vs SJ", "infer vs plain", "1st call s (infer / train)", "peak ΔRSS MiB",
              "others' CPU", "firing rate (hidden / out)", "same as plain (hidden / counts)",
              "grad cos (fc1 / fc2)", "check"]  # fmt: skip
    rows: list[list[object]] = []
    for name, r in results.items():
        if r["status"] != "ok":
            rows.append([name] + ["—"] * (len(header) - 2) + [r["status"]])
            continue
        c = r["check"]
        rows.append(
            [
                name,
                r["train_steps_per_s"],
                *ratios(r, "train_steps_per_s"),
                r["infer_batches_per_s"],
                *ratios(r, "infer_batches_per_s"),
                f"{r['first_infer_s']:.2f} / {r['first_train_s']:.2f}",
                f"{r['delta_rss_mib']:.0f}",
                f"{r['others_cpu']:.2f}",
                f"{c['hidden_rate']:.4f} / {c['out_rate']:.4f}",
                f"{100 * c['hidden_spikes_equal']:.2f}% / {100 * c['out_counts_equal']:.1f}%",
                f"{c['grad_cos_fc1']:.3f} / {c['grad_cos_fc2']:.3f}",
                verdict(c),
            ]
        )
    return markdown_table(header, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = ap.add_argument
    add("--repeats", type=int, default=7, help="interleaved timing rounds (median over them)")
    add("--steps", type=int, default=6, help="training steps per window")
    add("--infer-steps", type=int, help="inference batches per window (default: 2 x --steps)")
    add("--warmup", type=int, default=2, help="untimed calls of each kind before timing")
    add("--only", help=f"comma-separated subset of: {','.join(NAMES)}")
    add("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    add(
        "--reset-grad",
        choices=("detached", "attached"),
        default="detached",
        help="gradient through the reset term (spikeopt's default: detached)",
    )
    add(
        "--warm-compile-cache",
        action="store_true",
        help="reuse torch.compile's on-disk cache (default: a fresh one: a true cold compile)",
    )
    add("--wait-quiet", type=float, default=0, metavar="SECONDS",
        help="first wait up to this long for other processes to leave the CPU idle")  # fmt: skip
    add("--seed", type=int, default=0, help="seed of the weights and the random batch")
    add("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.infer_steps is None:
        args.infer_steps = 2 * args.steps
    if args.only:
        chosen = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in NAMES]
        if unknown:
            ap.error(f"--only: unknown variant(s) {unknown}; valid: {', '.join(NAMES)}")
        args.only = chosen
    return args


def run_all(args: argparse.Namespace) -> dict[str, dict]:
    """Prepare every chosen variant in turn, then time them all in interleaved rounds."""
    weights = reference_weights(args.seed)
    x = torch.rand(BATCH, N_IN, generator=torch.Generator().manual_seed(args.seed + 1))
    y = torch.randint(0, N_OUT, (BATCH,), generator=torch.Generator().manual_seed(args.seed + 2))
    plain = PlainNet(weights, detach_reset=args.reset_grad == "detached")
    # Imports and one training step first, so that library imports, the thread pool, BLAS
    # buffers and what Adam's first step loads lazily are charged to no variant.
    chosen = [v for v in VARIANTS if not args.only or v.name in args.only]
    for module in {m for v in chosen for m in v.imports}:
        with contextlib.suppress(ImportError):  # the variant reports it when it is built
            importlib.import_module(module)
    opt = torch.optim.Adam(plain.parameters(), lr=LR)
    s_hidden, s_out = plain(x)  # what every variant is checked against
    F.cross_entropy(s_out.sum(1), y).backward()
    g1, g2 = weight_grads(plain)
    assert g1 is not None and g2 is not None
    ref = Reference(s_hidden.detach(), s_out.detach(), g1.clone(), g2.clone())
    opt.step()
    del plain, opt
    results: dict[str, dict] = {}
    running: list[Running] = []
    for v in chosen:
        print(f"preparing {v.name} ...", file=sys.stderr, flush=True)
        try:
            running.append(prepare(v, weights, (x, y), ref, args))
            results[v.name] = running[-1].result
        except ImportError as e:  # a peer or spikeopt not importable: skip, say why
            results[v.name] = {"status": "skipped", "reason": f"{type(e).__name__}: {e}"}
        except Exception as e:  # a broken variant must not hide the others
            traceback.print_exc()
            results[v.name] = {"status": "FAILED", "reason": f"{type(e).__name__}: {e}"}
        if results[v.name]["status"] != "ok":
            print(f"  {results[v.name]['status']}: {results[v.name]['reason']}", file=sys.stderr)
    print(f"timing {len(running)} variants in {args.repeats} rounds ...", file=sys.stderr)
    measure_interleaved(running, args)
    return results


def report(results: dict[str, dict], env: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the header, the table and the notes to stdout."""
    print(
        f"# throughput: {N_IN}-{N_HID}-{N_OUT} LIF, T={STEPS_T}, batch {BATCH}, "
        f"beta={BETA:.4f}, Adam lr {LR}, reset gradient {args.reset_grad}\n"
    )
    print(
        f"torch {env['versions']['torch']}, {env['torch_threads']} threads, {env['cpu']}; "
        f"{args.repeats} rounds of ({args.steps} train steps | {args.infer_steps} inference "
        f"batches) after {args.warmup} warmup calls; 1-min load average "
        f"{env['load_average_1min_at_start']:.2f} before the run\n"
    )
    print(table(results))
    busiest = max((r["others_cpu"] for r in results.values() if r["status"] == "ok"), default=0)
    if busiest > 0.1:
        print(
            f"\nWARNING: other processes used up to {100 * busiest:.0f}% of the machine "
            "during a timed window; the rates are noisy (the interleaving keeps the ratios "
            "fairer). Re-run on a quiet machine for numbers to quote."
        )
    print("\nNotes (differences from the target dynamics that could not be removed):")
    for v in VARIANTS:
        if v.name in results:
            r = results[v.name]
            extra = "" if r["status"] == "ok" else f" [{r['status']}: {r['reason']}]"
            print(f"- {v.name}: {v.note}{extra}")
    print(
        "\nColumns: medians over the rounds; 1st call = the first inference / training call, "
        "outside the timing (a cold torch.compile for the compiled variant); peak ΔRSS = "
        "peak resident memory above the variant's starting RSS while it was built, checked "
        "and warmed up; others' CPU = the largest share of the machine other processes used "
        "during one of the variant's windows; same as plain = the share of hidden spikes and "
        "of output counts identical to plain-torch's on the shared initial weights and batch; "
        "grad cos = cosine of the first step's fc1 / fc2 weight gradients with plain-torch's "
        "(scale-free: only surrogate shape and reset handling move it); check = ok when >= "
        "99.9% of hidden spikes and >= 99% of output counts agree, DIFF otherwise, SILENT when "
        "a layer never fires."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fresh_cache = None
    if not args.warm_compile_cache and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        fresh_cache = tempfile.mkdtemp(prefix="bench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh_cache  # read at the first compile
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.wait_quiet > 0:
        waited = wait_until_quiet(args.wait_quiet)
        print(f"waited {waited:.0f} s for a quiet machine", file=sys.stderr)
    env = environment(PACKAGES)
    try:
        results = run_all(args)
    finally:
        if fresh_cache:
            shutil.rmtree(fresh_cache, ignore_errors=True)
    env["load_average_1min_at_end"] = load_average()
    report(results, env, args)
    if args.json:
        write_json(
            args.json,
            {
                "environment": env,
                "args": {k: v for k, v in vars(args).items() if k != "json"},
                "setup": {**SETUP, "tau_sj": TAU_SJ},
                "results": results,
                "notes": {v.name: v.note for v in VARIANTS},
            },
        )
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if all(r["status"] != "FAILED" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
