"""One training loop for every method: data -> method.step -> metrics -> outputs.

An epoch is ``trainer.steps_per_epoch`` method steps (default: one pass over the training
set); after each epoch the loop evaluates on the test split, writes a ``metrics.csv`` row,
TensorBoard scalars and an atomic checkpoint, then steps the schedules and early stopping.
Everything random is drawn from generators seeded by ``(seed, epoch)``, so a run resumed
from its last checkpoint replays the remaining epochs exactly.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

import spikeopt
from spikeopt import config as C
from spikeopt.builders import Builders, check_model
from spikeopt.functional.loss import Loss, make_loss
from spikeopt.functional.surrogate import default_alpha, get_surrogate
from spikeopt.methods import Method, TrainState, make_method
from spikeopt.methods.base import forward_loss
from spikeopt.nn import build_model, n_params, set_surrogate
from spikeopt.tasks.datasets import Dataset, as_signal, augment, load_dataset
from spikeopt.tasks.encoders import make_encoder, step_shape
from spikeopt.train import outputs as io
from spikeopt.train.metrics import evaluate
from spikeopt.train.schedules import alpha_at, build_lr_scheduler, step_lr_scheduler

Callback = Callable[[dict[str, Any]], None]


@dataclass
class Experiment:
    """Everything a config builds, before anything is trained or written."""

    cfg: C.Config
    data: Dataset
    model: nn.Module
    loss: Loss
    method: Method
    state: TrainState
    device: torch.device
    encode: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    C.choose("trainer.device", name, ("auto", "cpu", "cuda"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise C.ConfigError("trainer.device=cuda but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def build(cfg: C.Config, builders: Builders | None = None) -> Experiment:
    """Load data and build model, loss and method; every bad setting raises here."""
    device = pick_device(cfg.trainer.device)
    C.choose("data.augment", cfg.data.augment, ("none", "flip", "flip-crop"))
    encode = make_encoder(cfg.encoder)
    if cfg.encoder.kind in ("rate", "deterministic", "latency") and cfg.data.normalize:
        raise C.ConfigError(
            f"encoder.kind={cfg.encoder.kind} reads inputs as probabilities in [0, 1]; "
            "set data.normalize=false (or use encoder.kind=repeat)"
        )
    b = builders or Builders()
    data = b.data(cfg) if b.data else load_dataset(cfg.data)
    if cfg.encoder.kind == "sequence" and not data.sequence:
        raise C.ConfigError(
            f"encoder.kind=sequence reads each sample as a time series, but data.name="
            f"{cfg.data.name} holds static samples; use encoder.kind=repeat (or rate, ...)"
        )
    if cfg.model.arch == "conv" and len(data.input_shape) == 1 and cfg.encoder.kind != "sequence":
        data = as_signal(data)  # a 1-D conv over the whole series at every step
    torch.manual_seed(cfg.trainer.seed)
    shape = step_shape(cfg.encoder, data.input_shape)
    if b.model:  # a user model: its output contract is checked on a real batch first
        model = b.model(cfg, shape, data.n_classes).to(device)
        n_out = data.n_classes * cfg.model.neurons_per_class
        check_model(model, encode(data.x_train[:2].to(device), None), n_out)
    else:
        model = build_model(cfg, shape, data.n_classes).to(device)
    loss = b.loss(cfg) if b.loss else make_loss(cfg.loss, cfg.model.neurons_per_class, model)
    method = make_method(cfg, loss)
    state = method.init(model, cfg)
    if cfg.trainer.compile:  # training: model + loss as one graph; evaluation: the model
        state.forward = torch.compile(forward_loss)
        model.compile()
    return Experiment(cfg, data, model, loss, method, state, device, encode)


def _generator(seed: int, epoch: int, stream: int, device: torch.device) -> torch.Generator:
    """A generator for one (seed, epoch, purpose): no RNG state needs saving to resume."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch * 101 + stream) % (2**63))
    return g


def _batches(exp: Experiment, epoch: int) -> tuple[int, Any]:
    """(number of steps, iterator of encoded training batches) for one epoch."""
    cfg, x, y = exp.cfg, exp.data.x_train, exp.data.y_train
    bs = min(cfg.data.batch_size, len(x))
    steps = cfg.trainer.steps_per_epoch or math.ceil(len(x) / bs)
    order = _generator(cfg.trainer.seed, epoch, 0, torch.device("cpu"))
    noise = _generator(cfg.trainer.seed, epoch, 1, exp.device)
    fixed = cfg.trainer.overfit_batch
    if fixed:  # the first batch of epoch 0, over and over: same samples, noise, no augment
        first = _generator(cfg.trainer.seed, 0, 0, torch.device("cpu"))
        perm = torch.randperm(len(x), generator=first)[:bs].repeat(steps)
    else:
        passes = math.ceil(steps * bs / len(x))
        perm = torch.cat([torch.randperm(len(x), generator=order) for _ in range(passes)])

    def gen() -> Any:
        for i in range(steps):
            if fixed:
                noise.manual_seed(cfg.trainer.seed + 777)
            idx = perm[i * bs : (i + 1) * bs]
            xb = x[idx]
            if cfg.data.augment != "none" and not fixed:
                xb = augment(xb, cfg.data.augment, order)
            xb = xb.to(exp.device)
            yield exp.encode(xb, noise), y[idx].to(exp.device)

    return steps, gen()


def _improved(value: float, best: float | None, goal: str, delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value > best + delta if goal == "max" else value < best - delta


def _early_stop(cfg: C.EarlyStopConfig, row: dict[str, Any], es: dict[str, Any]) -> bool:
    """Update the early-stopping record ``es`` with ``row``; True when training should stop."""
    mode = C.choose("early_stop.mode", cfg.mode, ("none", "threshold", "patience"))
    if mode == "none":
        return False
    C.choose("early_stop.goal", cfg.goal, ("max", "min"))
    if cfg.metric not in row:
        raise C.ConfigError(f"early_stop.metric '{cfg.metric}' is not logged; one of {sorted(row)}")
    value = float(row[cfg.metric])
    if mode == "threshold":
        return value >= cfg.threshold if cfg.goal == "max" else value <= cfg.threshold
    if _improved(value, es.get("best"), cfg.goal, cfg.min_delta):
        es["best"], es["bad"] = value, 0
    else:
        es["bad"] = es.get("bad", 0) + 1
    return es["bad"] >= cfg.patience


def versions() -> dict[str, str]:
    """Versions of what produced a result."""
    return {
        "spikeopt": spikeopt.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def train(
    cfg: C.Config,
    out: Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    callbacks: list[Callback] | None = None,
    name: str = "",
    builders: Builders | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` to the end (or to early stopping); returns the summary dict.

    With ``out`` every output is written there; ``resume`` continues from ``out``'s
    checkpoint. Callbacks receive each epoch's metrics row.
    """
    exp = build(cfg, builders)  # fails before anything is written
    tc = cfg.trainer
    sched = build_lr_scheduler(exp.state.optimizer, cfg.sched, tc.epochs)
    alpha0 = (
        cfg.neuron.alpha if cfg.neuron.alpha is not None else default_alpha(cfg.neuron.surrogate)
    )
    rows: list[dict[str, Any]] = []
    es_state: dict[str, Any] = {}
    start, wall0 = 0, 0.0
    if resume:
        assert out is not None
        ck = io.load_checkpoint(out / "checkpoint.pt")
        exp.state = exp.method.load_state_dict(exp.state, ck["method"])
        if sched is not None and ck["scheduler"] is not None:
            sched.load_state_dict(ck["scheduler"])
        rows, es_state, start, wall0 = ck["rows"], ck["early_stop"], ck["epoch"], ck["wall_s"]
        torch.set_rng_state(ck["rng"])
    tb = None
    if out is not None:
        io.write_text(out / "config.yaml", C.dump_yaml(cfg))
        tb = io.TensorBoard(out / "tb", purge_step=start if resume else None)
    t0 = time.perf_counter() - wall0
    eval_noise = _generator(tc.seed, 0, 2, exp.device)  # the same test encoding every epoch
    stopped = False
    for epoch in range(start, tc.epochs):
        alpha = alpha_at(epoch, tc.epochs, cfg.neuron, alpha0)
        set_surrogate(exp.model, get_surrogate(cfg.neuron.surrogate, alpha))
        steps, batches = _batches(exp, epoch)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        bar = tqdm(
            batches,
            total=steps,
            desc=f"epoch {epoch + 1}/{tc.epochs}",
            leave=False,
            disable=quiet or not tc.progress,
            dynamic_ncols=True,
        )
        for batch in bar:
            exp.state, metrics = exp.method.step(exp.state, batch)
            for k, v in metrics.items():  # a key may be reported every k-th step only
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics.get('acc', 0):.3f}")
        eval_noise.manual_seed(tc.seed + 12345)
        test = evaluate(
            exp.model,
            exp.loss,
            exp.data.x_test,
            exp.data.y_test,
            exp.encode,
            cfg.data.eval_batch_size,
            exp.device,
            eval_noise,
            exp.data.n_classes,
            cfg.metric.per_class_recall,
            recall_class=cfg.metric.recall_class,
        )
        if tc.eval_train:  # the fixed training subset, encoded as the test set is
            eval_noise.manual_seed(tc.seed + 12345)
            on_train = evaluate(
                exp.model,
                exp.loss,
                exp.data.x_train,
                exp.data.y_train,
                exp.encode,
                cfg.data.eval_batch_size,
                exp.device,
                eval_noise,
                exp.data.n_classes,
                False,
            )
            test.update({f"train_eval_{k}": on_train[k] for k in ("loss", "acc")})
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": exp.state.step,
            "lr": exp.state.optimizer.param_groups[0]["lr"],
            "alpha": alpha,
        }
        row.update({f"train_{k}": v / counts[k] for k, v in sums.items()})
        row.update(
            {f"test_{k}" if k in ("loss", "acc", "wta_acc") else k: v for k, v in test.items()}
        )
        if builders is not None and builders.metrics is not None:
            row.update(builders.metrics(exp))
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        step_lr_scheduler(sched, row, cfg.sched)
        stopped = _early_stop(cfg.early_stop, row, es_state)
        if out is not None and tb is not None:
            io.write_csv(out / "metrics.csv", rows)
            tb.log(row, epoch + 1)
            io.save_checkpoint(
                out / "checkpoint.pt",
                {
                    "method": exp.method.state_dict(exp.state),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "rows": rows,
                    "early_stop": es_state,
                    "epoch": epoch + 1,
                    "wall_s": row["wall_s"],
                    "rng": torch.get_rng_state(),
                },
            )
        for cb in callbacks or []:
            cb(row)
        if not quiet:
            tqdm.write(
                f"epoch {epoch + 1}/{tc.epochs}  train_loss {row.get('train_loss', 0):.4f}  "
                f"train_acc {row.get('train_acc', 0):.4f}  test_loss {row['test_loss']:.4f}  "
                f"test_acc {row['test_acc']:.4f}"
            )
        if stopped:
            break
    summary = summarize(cfg, exp, rows, stopped, name)
    if out is not None and tb is not None:
        tb.close()
        io.write_json(out / "summary.json", summary)
        io.plot_curves(out / "curves.png", rows, name or cfg.data.name)
    return summary


def summarize(
    cfg: C.Config, exp: Experiment, rows: list[dict[str, Any]], stopped: bool, name: str
) -> dict[str, Any]:
    """The keys DESIGN.md fixes for classification, plus provenance."""
    last = rows[-1] if rows else {}
    best = max(rows, key=lambda r: r["test_acc"]) if rows else {}
    return {
        "recipe": name,
        "method": cfg.method.name,
        "test_acc": last.get("test_acc"),
        "train_acc": last.get("train_acc"),
        "test_loss": last.get("test_loss"),
        "best_test_acc": best.get("test_acc"),
        "best_epoch": best.get("epoch"),
        "wall_s": last.get("wall_s", 0.0),
        "iterations": exp.state.step,
        "epochs": len(rows),
        "stopped_early": stopped,
        "n_params": n_params(exp.model),
        "seed": cfg.trainer.seed,
        "device": str(exp.device),
        "versions": versions(),
    }
