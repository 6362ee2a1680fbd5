"""ONE training loop for every method and every task: task.batches -> method.step -> rows.

Per epoch (a classification epoch of minibatches, or one control update)::

    surrogate sharpness for the epoch (neuron.alpha_schedule)
    for batch in task.batches(epoch): method.step      lazy: control rolls out the policy
    rows = task.evaluate(...)                           + user metrics, wall time
    LR schedule step, early stopping                    on the epoch's last row
    metrics.csv, TensorBoard, best.pt, checkpoint.pt    each written atomically; callbacks

then a method's optional ``finish(task)`` (conversion: the SNN it made, written to a run
folder inside the run's), ``summary.json`` (the task's keys and provenance) and ``curves.png``.
The checkpoint holds everything that changes while training (method state, LR scheduler, rows, early
stopping, the torch RNG), and the tasks draw every other random number from generators
seeded by the epoch, so a run resumed from its last checkpoint replays the rest exactly.
``best.pt`` holds the model of the epoch with the best ``task.metric`` (its value is in the
checkpoint, so a resumed run keeps choosing the same one); :func:`spikeopt.load` reads it.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import spikeopt
from spikeopt import config as C
from spikeopt.builders import Builders
from spikeopt.functional.surrogate import default_alpha, get_surrogate
from spikeopt.methods.base import Finished
from spikeopt.nn import n_params, set_surrogate
from spikeopt.nn.hw import hw_metrics, set_sign_alpha, sign_alpha_at
from spikeopt.tasks.base import Row, Step
from spikeopt.train import outputs as io
from spikeopt.train.experiment import Experiment, build
from spikeopt.train.schedules import alpha_at, build_lr_scheduler, step_lr_scheduler

Callback = Callable[[Row], None]  # called with every metrics row, after it is checkpointed
EARLY_STOP_MODES: tuple[str, ...] = ("none", "threshold", "patience")  # _early_stop
GOALS: tuple[str, ...] = ("max", "min")  # early_stop.goal: _improved
NONFINITE: tuple[str, ...] = ("stop", "skip")  # trainer.nonfinite: _steps


class Guard:
    """Undo for one step: the model's parameters and buffers and the optimizer's state are
    copied into buffers kept for the run before each step (one memcpy of each, no
    allocation), so a step that leaves anything non-finite can be put back."""

    def __init__(self) -> None:
        self.saved: list[torch.Tensor] = []
        self.keys: list[tuple[Any, str]] = []  # (param, key) of each saved optimizer tensor

    @staticmethod
    def _tensors(exp: Experiment) -> tuple[list[torch.Tensor], list[tuple[Any, str]]]:
        model, opt = exp.model, exp.state.optimizer
        tensors = [t.detach() for t in (*model.parameters(), *model.buffers())]
        keys = [] if opt is None else [
            (p, k) for p, st in opt.state.items() for k, v in st.items()
            if isinstance(v, torch.Tensor)
        ]  # fmt: skip
        return tensors + [opt.state[p][k] for p, k in keys] if opt else tensors, keys

    def save(self, exp: Experiment) -> None:
        """Copy the current values (the buffers are rebuilt only when the state's layout
        changed: after the optimizer's first step)."""
        tensors, keys = self._tensors(exp)
        same = len(tensors) == len(self.saved) and all(
            a.shape == b.shape and a.dtype == b.dtype for a, b in zip(tensors, self.saved)
        )
        if same and keys == self.keys:
            torch._foreach_copy_(self.saved, tensors)
        else:
            self.saved, self.keys = [t.clone() for t in tensors], keys

    def restore(self, exp: Experiment) -> None:
        """Put the saved values back in place (the tensors stay the same objects); optimizer
        state created by the undone step is dropped."""
        opt = exp.state.optimizer
        if opt is not None:
            for p in [p for p in opt.state if p not in {q for q, _ in self.keys}]:
                del opt.state[p]
        tensors, keys = self._tensors(exp)
        assert keys == self.keys, "the undone step changed the optimizer state's layout"
        with torch.no_grad():
            torch._foreach_copy_(tensors, self.saved)


def nonfinite_count(exp: Experiment, metrics: dict[str, float]) -> int:
    """NaN/inf values in the model's parameters and buffers, plus one for a non-finite loss.

    The cheap test runs every step: a tensor's sum is finite when all of it is (one device
    sync for all); the exact count only when it is not (or a sum overflowed).
    """
    tensors = [t.detach() for t in (*exp.model.parameters(), *exp.model.buffers())]
    tensors = [t for t in tensors if t.is_floating_point()]
    loss_bad = int(not math.isfinite(float(metrics.get("loss", 0.0))))
    if not tensors or bool(torch.stack([t.sum().float() for t in tensors]).sum().isfinite()):
        return loss_bad
    return int(torch.stack([(~torch.isfinite(t)).sum() for t in tensors]).sum()) + loss_bad


def _improved(value: float, best: float | None, goal: str, delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value > best + delta if goal == "max" else value < best - delta


def _early_stop(cfg: C.EarlyStopConfig, row: Row, es: dict[str, Any]) -> bool:
    """Update the early-stopping record ``es`` with ``row``; True when training should stop."""
    C.check_choices(cfg)
    mode = cfg.mode
    if mode == "none":
        return False
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


def _steps(
    exp: Experiment, epoch: int, show: bool, bad: dict[str, Any], guard: Guard
) -> list[Step]:
    """Run the method over the epoch's batches; (batch info, metrics) per step.

    A step that leaves a non-finite weight or loss is undone and recorded in ``bad``
    (``trainer.nonfinite``: ``stop`` ends the epoch there and sets ``bad["stop"]``, ``skip``
    goes on with the next batch).
    """
    task, steps = exp.task, []
    bar = tqdm(task.batches(epoch), total=task.steps, desc=f"epoch {epoch + 1}/{task.epochs}",
               leave=False, disable=not show or task.steps < 2, dynamic_ncols=True)  # fmt: skip
    for batch in bar:
        guard.save(exp)
        exp.state, metrics = exp.method.step(exp.state, batch.data)
        count = nonfinite_count(exp, metrics)
        if count:
            guard.restore(exp)
            bad["skipped"] = bad.get("skipped", 0) + 1
            bad.setdefault("first", {"epoch": epoch + 1, "step": exp.state.step, "values": count})
            action = exp.cfg.trainer.nonfinite
            then = "stop" if action == "stop" else "skip such steps"
            if bad["skipped"] == 1:  # said once; the summary counts the rest
                print(f"spikeopt: step {exp.state.step} (epoch {epoch + 1}) left {count} NaN/inf "
                      f"weight or loss values; the step was undone and the run will {then} "
                      f"(trainer.nonfinite={action}; a smaller optim.lr usually cures it)",
                      file=sys.stderr)  # fmt: skip
            if action == "stop":
                bad["stop"] = True
                break
            continue
        steps.append((batch.info, metrics))
        bar.set_postfix({k: f"{metrics[k]:.3f}" for k in ("loss", "acc") if k in metrics})
    return steps


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
    checkpoint. Callbacks receive every metrics row (one per epoch, or per control episode).
    """
    exp = build(cfg, builders)  # fails before anything is written
    task, opt = exp.task, exp.state.optimizer
    sched = build_lr_scheduler(opt, cfg.sched, task.epochs) if opt is not None else None
    alpha0 = (
        cfg.neuron.alpha if cfg.neuron.alpha is not None else default_alpha(cfg.neuron.surrogate)
    )
    rows: list[Row] = []
    es_state: dict[str, Any] = {}
    bad: dict[str, Any] = {}  # undone non-finite steps (trainer.nonfinite)
    guard = Guard()
    start, wall0, best = 0, 0.0, -math.inf
    if resume:
        if out is None:
            raise C.ConfigError("resume needs the run's output folder (out)")
        ck = io.load_checkpoint(out / "checkpoint.pt")
        if ck.get("made"):  # e.g. conversion's snn/: a model a finished run wrote, not a run
            raise C.ConfigError(
                f"{out} holds the model that the finished run in {out.parent} made at its end; "
                "it is not a training run, so there is nothing to resume. Load or export it "
                f"(spikeopt.load('{out}'), spikeopt export {out} --format nir), or resume the "
                f"run itself with --resume {out.parent}"
            )
        if name and ck.get("recipe", name) != name:
            raise C.ConfigError(
                f"{out} is a run of {ck['recipe']}, not {name}; resume it with "
                f"`spikeopt run {ck['recipe']} --resume {out}`"
            )
        try:
            exp.state = exp.method.load_state_dict(exp.state, ck["method"])
        except (KeyError, RuntimeError, ValueError) as err:  # shapes or names that differ
            raise C.ConfigError(
                f"{out}/checkpoint.pt does not fit the model and method of {out}/config.yaml "
                f"({type(err).__name__}: {str(err)[:160]}); was config.yaml edited? restore "
                "it, or start a new run"
            ) from None
        if sched is not None and ck["scheduler"] is not None:
            sched.load_state_dict(ck["scheduler"])
        rows, es_state, start, wall0 = ck["rows"], ck["early_stop"], ck["epoch"], ck["wall_s"]
        best = float(ck.get("best", -math.inf))  # older checkpoints: the next epoch writes it
        torch.set_rng_state(ck["rng"])
    tb = None
    if out is not None:
        io.write_text(out / "config.yaml", C.dump_yaml(cfg))
        # events logged after the checkpoint (a crash between writes) are dropped on resume
        tb = io.TensorBoard(out / "tb", purge_step=int(rows[-1][task.key]) + 1 if rows else None)
    t0 = time.perf_counter() - wall0
    # a bar redraws with \r: into a pipe or a log file it is kilobytes of noise per epoch, so
    # there only the one line per epoch below is written
    show = not quiet and cfg.trainer.progress and sys.stderr.isatty()
    stopped = False
    bar = tqdm(range(start, task.epochs), total=task.epochs, initial=start,
               desc=name or task.kind, disable=not show, dynamic_ncols=True)  # fmt: skip
    for epoch in bar:
        alpha = alpha_at(epoch, task.epochs, cfg.neuron, alpha0)
        set_surrogate(exp.model, get_surrogate(cfg.neuron.surrogate, alpha))
        if cfg.hw.sign_anneal:  # the row-block signs harden epoch by epoch (spikeopt.nn.hw)
            set_sign_alpha(exp.model, sign_alpha_at(epoch, cfg.hw, task.epochs))
        steps = _steps(exp, epoch, show, bad, guard)
        if not steps and task.kind != "classification":  # every update undone: no episode row
            if bad.get("stop"):
                break
            continue
        head: Row = {"step": exp.state.step}
        if opt is not None:
            head["lr"] = opt.param_groups[0]["lr"]
        head["alpha"] = alpha
        new = task.evaluate(epoch, steps, head)
        extra = builders.metrics(exp) if builders is not None and builders.metrics else {}
        extra.update(hw_metrics(exp.model, cfg.hw, cfg.loss.terms))  # sign_alpha, coherence
        wall = time.perf_counter() - t0
        for row in new:
            row.update(extra)
            row["wall_s"] = wall
        rows.extend(new)
        step_lr_scheduler(sched, new[-1], cfg.sched)
        stopped = _early_stop(cfg.early_stop, new[-1], es_state) or bool(bad.get("stop"))
        if out is not None and tb is not None:
            io.write_csv(out / "metrics.csv", rows)
            for row in new:
                tb.log(row, int(row[task.key]))
            best = _save_best(out, exp, new, best, epoch, name)  # before the checkpoint counts it
            io.save_checkpoint(
                out / "checkpoint.pt",
                {
                    "method": exp.method.state_dict(exp.state),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "rows": rows,
                    "early_stop": es_state,
                    "epoch": epoch + 1,
                    "wall_s": wall,
                    "rng": torch.get_rng_state(),
                    "recipe": name,
                    "best": best,
                },
            )
        for cb in callbacks or []:
            for row in new:
                cb(row)
        shown = {k: float(new[-1].get(k, math.nan)) for k in task.shown}
        bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
        if not quiet:
            line = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
            tqdm.write(f"epoch {epoch + 1}/{task.epochs}  {line}")
        if stopped:
            break
    summary = summarize(exp, rows, stopped, name)
    finish = getattr(exp.method, "finish", None)  # conversion: the SNN made from the ANN
    if finish is not None and rows:
        done: Finished = finish(exp.task)
        summary.update(done.summary)
        if out is not None and done.model is not None and done.cfg is not None:
            summary[f"{done.folder}_dir"] = str(out / done.folder)
            _write_made(out / done.folder, done, len(rows), name)
    if bad:  # only runs that met one carry the keys
        summary["nonfinite_steps"] = bad["skipped"]
        summary["nonfinite_first"] = bad["first"]
        summary["nonfinite_action"] = cfg.trainer.nonfinite
        summary["ok"] = not bad.get("stop")  # the CLI exits 1 for a run stopped by it
    if out is not None and tb is not None:
        tb.close()
        io.write_json(out / "summary.json", summary)
        io.write_figure(out / "curves.png", task.curves(rows, summary, name))
        # a task's own run files (language: samples.txt), written like every other output
        files = getattr(task, "files", None)
        for fname, text in (files() if files is not None else {}).items():
            io.write_text(out / fname, text)
    return summary


BEST = "best.pt"  # the model of the epoch with the best task.metric (spikeopt.load)


def _write_made(folder: Path, done: Finished, epochs: int, name: str) -> None:
    """A model a method made at the end, as a run folder ``spikeopt.load``/``export`` read:
    the config that rebuilds it, and its weights as both ``best.pt`` and ``checkpoint.pt``."""
    assert done.model is not None and done.cfg is not None
    state = done.model.state_dict()
    io.write_text(folder / "config.yaml", C.dump_yaml(done.cfg))
    io.save_checkpoint(folder / BEST, {"model": state, "epoch": epochs, "metric": "test_acc",
                                       "value": done.value, "recipe": name})  # fmt: skip
    io.save_checkpoint(folder / "checkpoint.pt", {"method": {"model": state}, "epoch": epochs,
                                                  "recipe": name, "made": True})  # fmt: skip


def _save_best(
    out: Path, exp: Experiment, new: list[Row], best: float, epoch: int, name: str
) -> float:
    """Write ``best.pt`` (the model and its epoch) when this epoch's ``task.metric`` (mean of
    its rows) beats ``best``, the best earlier one (the first of equal epochs wins, as
    ``best_test_acc`` does), or when there is none yet; returns the new best."""
    values = [float(r[exp.task.metric]) for r in new if exp.task.metric in r]
    value = sum(values) / len(values) if values else math.nan
    if value > best or not (out / BEST).exists():
        payload = {"model": exp.model.state_dict(), "epoch": epoch + 1,
                   "metric": exp.task.metric, "value": value, "recipe": name}  # fmt: skip
        io.save_checkpoint(out / BEST, payload)
    return max(best, value) if math.isfinite(value) else best


def summarize(exp: Experiment, rows: list[Row], stopped: bool, name: str) -> dict[str, Any]:
    """The task's summary keys (DESIGN.md) between the recipe/method and the provenance."""
    cfg = exp.cfg
    return {
        "recipe": name,
        "method": cfg.method.name,
        **exp.task.summary(rows),
        "wall_s": rows[-1]["wall_s"] if rows else 0.0,
        "iterations": exp.state.step,
        "stopped_early": stopped,
        "n_params": n_params(exp.model),
        "seed": cfg.trainer.seed,
        "device": str(exp.device),
        "versions": versions(),
    }


__all__ = ["Callback", "Experiment", "build", "summarize", "train", "versions"]
