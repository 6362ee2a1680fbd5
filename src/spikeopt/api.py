"""The Python entry points: resolve a recipe's config and run it.

``resolve`` is ``recipe defaults <- YAML file <- key=value overrides``; ``run`` trains and
writes the outputs (what it trains is the config's ``trainer.task``, so a resumed run needs
nothing but its folder); ``forward_check`` is ``trainer.forward_check`` (the ``snn-forward``
recipe).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeopt import config as C
from spikeopt.builders import Builders, ModelFn
from spikeopt.dist import quiet_ray
from spikeopt.recipes import get_recipe
from spikeopt.train import outputs as io
from spikeopt.train.loop import Callback, build, train, versions
from spikeopt.train.sessions import run_sessions


def resolve(
    recipe: str, overrides: dict[str, Any] | None = None, config_file: str | None = None
) -> C.Config:
    """The config a run of ``recipe`` uses after a YAML file and overrides are applied."""
    cfg = get_recipe(recipe).config()
    if config_file:
        cfg = C.apply(cfg, C.load_yaml(config_file))
    return C.apply(cfg, overrides or {})


def default_out(recipe: str) -> Path:
    """``runs/<recipe>-<timestamp>`` under the working directory, ``-2``, ``-3``... when a
    folder of that name exists (two runs started in the same second)."""
    base = Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def run(
    recipe: str,
    overrides: dict[str, Any] | None = None,
    config_file: str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    callbacks: list[Callback] | None = None,
    sessions: int = 1,
    workers: int = 0,
    model: ModelFn | nn.Module | None = None,
) -> dict[str, Any]:
    """Run a recipe and return its summary; with ``out``, write every output there.

    ``model`` trains your own network instead of the recipe's: an ``nn.Module`` keeping the
    model contract (docs/own-model.md) or a factory ``(cfg, input_shape, n_outputs) ->
    nn.Module``; from the command line, ``model.module=package.module:factory``.

    ``sessions > 1`` runs that many seeds (``trainer.seed + i``) in ``workers`` processes and
    returns their aggregate (:func:`spikeopt.train.sessions.run_sessions`).
    """
    out_dir = Path(out) if out is not None else None
    builders = None if model is None else Builders(model=_factory(model))
    if builders is not None and sessions > 1:
        raise C.ConfigError(
            "a model passed in Python runs one session; for --sessions name it with "
            "model.module=package.module:factory, which every session imports"
        )
    quiet_ray(quiet)  # quiet means quiet for the Ray this run may start, too
    if sessions < 1:
        raise C.ConfigError(f"--sessions must be >= 1, got {sessions}")
    if resume:
        if out_dir is None or not (out_dir / "config.yaml").exists():
            raise C.ConfigError(
                f"--resume {out}: no config.yaml there; give the --out folder of a run"
            )
        saved = C.from_dict(C.load_yaml(str(out_dir / "config.yaml")))
        cfg = C.apply(saved, overrides or {})
        check_resume(saved, cfg, out_dir)
    else:
        cfg = resolve(recipe, overrides, config_file)
    if out_dir is None:
        return _run(cfg, None, recipe, resume, quiet, callbacks, sessions, workers, builders)
    with io.run_lock(out_dir):  # checked and written by one process at a time
        if not resume and any((out_dir / f).exists() for f in ("checkpoint.pt", "session0")):
            raise io.FolderTaken(
                f"{out_dir} already holds a run; continue it with --resume {out_dir} "
                "or choose another --out"
            )
        return _run(cfg, out_dir, recipe, resume, quiet, callbacks, sessions, workers, builders)


# What a resume may change: where and how it runs, never what it computes; the length only
# where no schedule was laid out over it (RESUME_LENGTH).
RESUME_KEYS = ("trainer.progress", "trainer.device", "data.root", "data.cache_dir",
               "es.workers", "es.worker_cpus", "es.ray_address")  # fmt: skip
RESUME_LENGTH = ("trainer.epochs", "rl.episodes", "rl.generations")
LENGTH_FREE_SCHEDULES = ("none", "step", "multistep", "exponential", "plateau")


def check_resume(saved: C.Config, cfg: C.Config, out: Path) -> None:
    """Refuse a resume whose overrides change what the run computes (a ConfigError naming
    the key): it would no longer continue the run in ``out``."""
    before, after = C.flatten(C.to_dict(saved)), C.flatten(C.to_dict(cfg))
    for key in [k for k in after if after[k] != before.get(k) and k not in RESUME_KEYS]:
        if key in RESUME_LENGTH:
            laid_out = []
            if cfg.sched.name not in LENGTH_FREE_SCHEDULES:
                laid_out.append(f"sched.name={cfg.sched.name}")
            if cfg.neuron.alpha_schedule != "constant":
                laid_out.append(f"neuron.alpha_schedule={cfg.neuron.alpha_schedule}")
            if not laid_out:
                continue
            raise C.ConfigError(
                f"--resume {out}: {key}={after[key]} would change the run's length, but "
                f"{' and '.join(laid_out)} was laid out over {key}={before.get(key)} (the "
                "rates of the epochs left would jump); resume with the same length, or start "
                "a new run"
            )
        raise C.ConfigError(
            f"--resume {out}: {key}={after[key]!r} differs from the run's {before.get(key)!r}; "
            "a resume continues the run as it was. It may change only "
            f"{', '.join(RESUME_KEYS + RESUME_LENGTH)} (the length where no schedule depends "
            "on it); start a new run for the rest"
        )


def _run(
    cfg: C.Config,
    out_dir: Path | None,
    recipe: str,
    resume: bool,
    quiet: bool,
    callbacks: list[Callback] | None,
    sessions: int,
    workers: int,
    builders: Builders | None = None,
) -> dict[str, Any]:
    """What :func:`run` does once the config is resolved and the folder is held."""
    if cfg.trainer.forward_check:
        return forward_check(cfg, out_dir, builders)
    if resume and out_dir is not None:  # a multi-session folder resumes all its sessions
        sessions = max(sessions, len(list(out_dir.glob("session*"))))
    if sessions > 1 or (out_dir is not None and (out_dir / "session0").exists()):
        return run_sessions(cfg, out_dir or default_out(recipe), sessions, workers, recipe)
    return train(cfg, out_dir, resume, quiet, callbacks, name=recipe, builders=builders)


def _factory(model: ModelFn | nn.Module) -> ModelFn:
    """A model factory from a factory or a built module (used as it is)."""
    if isinstance(model, nn.Module):
        return lambda cfg, shape, n_out: model
    if not callable(model):
        raise C.ConfigError(
            f"model= must be an nn.Module or a factory (cfg, input_shape, n_outputs) -> "
            f"nn.Module, got {type(model).__name__}"
        )
    return model


def forward_check(
    cfg: C.Config, out: Path | None = None, builders: Builders | None = None
) -> dict[str, Any]:
    """One forward pass on a training batch: layer shapes (B, T, N) and a finite loss
    (classification: the loss needs labels)."""
    task = build(cfg, builders).classification
    x = task.data.x_train[: cfg.data.batch_size].to(task.device)
    y = task.data.y_train[: cfg.data.batch_size].to(task.device)
    xt = task.encode(x, torch.Generator(device=task.device).manual_seed(cfg.trainer.seed))
    with torch.no_grad():
        spikes, mems = task.model(xt)
        loss, _ = task.loss(spikes, mems, y)
    b, t = xt.shape[:2]
    layers = []
    for i, (s, v) in enumerate(zip(spikes, mems)):
        ok = s.dim() == 3 and s.shape[:2] == (b, t) and v.shape == s.shape
        # a spiking layer (the readout only when it is LIF) that never fires passes nothing on
        spiking = i < len(spikes) - 1 or cfg.model.readout == "lif"
        silent = spiking and not bool(s.any())
        layers.append({"layer": i, "shape": list(s.shape), "ok": ok and not silent,
                       "shape_ok": ok, "rate": float(s.mean()), "silent": silent})  # fmt: skip
    summary = {
        "input_shape": list(xt.shape),
        "layers": layers,
        "loss": float(loss),
        "loss_finite": math.isfinite(float(loss)),
        "ok": all(layer["ok"] for layer in layers) and math.isfinite(float(loss)),
        "versions": versions(),
    }
    if out is not None:
        io.write_text(out / "config.yaml", C.dump_yaml(cfg))
        io.write_json(out / "summary.json", summary)
    return summary
