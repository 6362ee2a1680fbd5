"""Checks of the setup itself: forward pass, data subsets, activity health, a BPTT reference."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from spikeopt import api
from spikeopt.config import Config, apply
from spikeopt.tasks.classification import EVAL_SEED
from spikeopt.tasks.datasets import load_dataset
from spikeopt.tasks.metrics import Activity, evaluate
from spikeopt.train.experiment import Experiment, build
from spikeopt.train.loop import train

Row = dict[str, Any]

# A layer is silent below this mean firing rate (spikes per neuron per step), saturated above
# SATURATED; a neuron is saturated when it fires at more than SATURATED of the steps.
SILENT, SATURATED = 0.005, 0.9


@dataclass
class Finding:
    """What one check measured: rows (-> CSV), a one-line verdict, pass/fail, how to plot."""

    check: str
    ok: bool
    verdict: str
    rows: list[Row]
    x: str  # the PNG's x column
    y: list[str]  # one panel per column
    group: str = ""  # one line per value of this column
    logx: bool = False
    bars: bool = False  # x names categories (layers, classes, encoders): bars, not a line
    extra: dict[str, Any] = field(default_factory=dict)


def fixed_batch(exp: Experiment) -> tuple[Tensor, Tensor]:
    """The first ``data.batch_size`` training samples, encoded with a seeded generator."""
    n = min(exp.cfg.data.batch_size, len(exp.data.x_train))
    gen = torch.Generator(device=exp.device).manual_seed(exp.cfg.trainer.seed)
    x = exp.data.x_train[:n].to(exp.device)
    return exp.encode(x, gen), exp.data.y_train[:n].to(exp.device)


def forward(cfg: Config) -> Finding:
    """One forward pass: every layer's (B, T, N) shape and firing rate, and a finite loss."""
    s = api.forward_check(cfg)
    rows = [{"layer": r["layer"], "neurons": r["shape"][-1], "rate": r["rate"], "ok": r["ok"]}
            for r in s["layers"]]  # fmt: skip
    shapes = " -> ".join("x".join(map(str, r["shape"])) for r in s["layers"])
    silent = [str(r["layer"]) for r in s["layers"] if r["silent"]]
    verdict = (
        f"input {'x'.join(map(str, s['input_shape']))} -> {shapes}; loss {s['loss']:.4f} "
        + ("finite" if s["loss_finite"] else "NOT FINITE")
        + ("" if all(r["shape_ok"] for r in s["layers"]) else "; a layer is not (B, T, N)")
        + (f"; layer {', '.join(silent)} never fires on this batch" if silent else "")
    )
    return Finding("forward", bool(s["ok"]), verdict, rows, "layer", ["rate"], bars=True)


def subset(cfg: Config) -> Finding:
    """Class balance of the fixed train/test subsets, repeatable evaluation, resolution."""
    exp = build(cfg)
    d = exp.data
    rows: list[Row] = []
    for split, y in (("train", d.y_train), ("test", d.y_test)):
        counts = torch.bincount(y, minlength=d.n_classes)
        rows += [{"split": split, "class": c, "count": int(n)} for c, n in enumerate(counts)]
    # evaluation must be a function of the weights only: the loop fixes the test encoding
    accs = [_test_acc(exp) for _ in range(2)]
    test_counts = [r["count"] for r in rows if r["split"] == "test"]
    se = math.sqrt(0.25 / max(len(d.y_test), 1))  # binomial std error of an accuracy near 0.5
    ok = accs[0] == accs[1] and min(test_counts) > 0
    verdict = (
        f"train {len(d.y_train)} / test {len(d.y_test)} samples, {d.n_classes} classes "
        f"({min(test_counts)}-{max(test_counts)} per class in test); evaluation "
        + ("repeatable" if accs[0] == accs[1] else f"NOT repeatable ({accs[0]} vs {accs[1]})")
        + f"; std error ~{se:.3f}: accuracy differences below ~{2 * se:.3f} are noise"
    )
    return Finding("subset", ok, verdict, rows, "class", ["count"], group="split",
                   bars=True, extra={"std_error": se})  # fmt: skip


def _test_acc(exp: Experiment) -> float:
    gen = torch.Generator(device=exp.device).manual_seed(exp.cfg.trainer.seed + EVAL_SEED)
    task = exp.classification
    d = task.data
    out = evaluate(task.model, task.loss, d.x_test, d.y_test, task.encode,
                   exp.cfg.data.eval_batch_size, exp.device, gen)  # fmt: skip
    return out["acc"]


def activity(cfg: Config, batches: int = 4) -> Finding:
    """Firing rate, dead and saturated neurons and membrane statistics per spiking layer of the
    freshly initialised model on a few training batches, with advice for unhealthy layers."""
    exp = build(cfg)
    acc, bs = Activity(), exp.cfg.data.batch_size
    gen = torch.Generator(device=exp.device).manual_seed(cfg.trainer.seed)
    exp.model.eval()
    n_layers = 0
    with torch.no_grad():
        for i in range(batches):
            x = exp.data.x_train[i * bs : (i + 1) * bs].to(exp.device)
            if not len(x):
                break
            spikes, mems = exp.model(exp.encode(x, gen))
            # an LI readout does not spike: only spiking layers are judged
            n_layers = len(spikes) if cfg.model.readout == "lif" else len(spikes) - 1
            acc.add(spikes[:n_layers], mems[:n_layers])
    s = acc.summary()
    rows, advice = [], []
    for i in range(n_layers):
        per_neuron = acc.count[i] / max(1, acc.samples * acc.steps)
        row = {"layer": i, "rate": s[f"layer{i}_rate"], "dead_frac": s[f"layer{i}_dead_frac"],
               "saturated_frac": float((per_neuron > SATURATED).double().mean()),
               "mem_mean": s[f"layer{i}_mem_mean"], "mem_var": s[f"layer{i}_mem_var"]}  # fmt: skip
        rows.append(row)
        advice += _advice(i, row)
    shown = ", ".join(f"layer{r['layer']} rate {r['rate']:.3f} dead {r['dead_frac']:.0%}"
                      for r in rows)  # fmt: skip
    verdict = shown + ("; " + "; ".join(advice) if advice else "; every layer is active")
    return Finding("activity", not advice, verdict, rows, "layer",
                   ["rate", "dead_frac", "saturated_frac", "mem_mean"], bars=True)  # fmt: skip


def _advice(i: int, row: Row) -> list[str]:
    if row["rate"] < SILENT or row["dead_frac"] > 0.5:
        return [f"layer{i} is nearly silent: raise encoder.gain or the weight scale "
                "(model.init=kaiming), or lower neuron.v_threshold"]  # fmt: skip
    if row["rate"] > 0.5 or row["saturated_frac"] > 0.5:
        return [f"layer{i} is saturated: raise neuron.v_threshold or lower the input scale"]
    return []


def backprop_sanity(cfg: Config, epochs: int = 3) -> Finding:
    """A short BPTT run of the same model and data: proof that they can learn at all."""
    ref = apply(cfg, {"method.name": "surrogate", "trainer.epochs": epochs,
                      "trainer.progress": False, "early_stop.mode": "none"})  # fmt: skip
    rows: list[Row] = []
    summary = train(ref, quiet=True, callbacks=[rows.append])
    chance = 1.0 / load_dataset(cfg.data, cfg.encoder.steps).n_classes
    acc = float(summary["test_acc"])
    ok = acc > 2 * chance
    verdict = (
        f"BPTT reaches test acc {acc:.4f} in {len(rows)} epochs (chance {chance:.2f}, lr "
        f"{ref.optim.lr:g}): " + ("model and data can learn" if ok else "NOT LEARNING: check "
                                  "the data, the encoder and the activity first")
    )  # fmt: skip
    keep = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
    rows = [{k: r[k] for k in keep if k in r} for r in rows]
    return Finding("backprop-sanity", ok, verdict, rows, "epoch", ["test_acc", "test_loss"])
