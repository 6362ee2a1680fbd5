"""A trained run back as a model (``spikeopt.load``), and ``spikeopt export`` to a file.

A run folder holds ``config.yaml``, ``checkpoint.pt`` (the last epoch, to resume) and
``best.pt`` (the model of the epoch with the best ``task.metric``: ``test_acc`` for
classification). :func:`load` rebuilds the network ``config.yaml`` describes (the task is
built too, so its data or environment must be reachable, as for ``--resume``) and loads one
of the two with ``torch.load(weights_only=True)``: no code in a file runs. :func:`export`
writes that model as a ``state_dict`` (``torch.save``) or a NIR graph (:mod:`spikeopt.nir`,
HDF5 through ``nir.write``), atomically, refusing to overwrite without ``force``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeopt import config as C
from spikeopt.train import outputs as io_out
from spikeopt.train.experiment import make_task, method_class

WHICH: tuple[str, ...] = ("best", "last")  # best.pt, checkpoint.pt
FORMATS: tuple[str, ...] = ("state_dict", "nir")
DEFAULT_DT = 1e-3  # seconds per time step written into a NIR graph (Norse's default)


def _run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` checked to be the folder one ``spikeopt run`` wrote."""
    folder = Path(run_dir)
    if not folder.exists():
        raise C.ConfigError(f"no such run folder: {folder}; give the --out folder of a run")
    if not folder.is_dir():
        raise C.ConfigError(f"{folder} is a file, not a run folder (the --out of a run)")
    sessions = sorted(p.name for p in folder.glob("session*") if p.is_dir())
    if sessions and not (folder / "config.yaml").exists():
        raise C.ConfigError(
            f"{folder} holds {len(sessions)} sessions; give one of them, e.g. "
            f"{folder / sessions[0]}"
        )
    if not (folder / "config.yaml").exists() or not (folder / "checkpoint.pt").exists():
        raise C.ConfigError(
            f"{folder} is not a run folder (no config.yaml and checkpoint.pt); give the --out "
            "folder of a `spikeopt run` that trained at least one epoch"
        )
    return folder


def restore(
    run_dir: str | Path, which: str = "best", device: str = "cpu"
) -> tuple[nn.Module, dict[str, Any], tuple[int, ...]]:
    """The run's model (eval mode), what its file says about it, and one step's input shape."""
    if which not in WHICH:
        raise C.ConfigError(f"which={which!r}: one of {', '.join(WHICH)} (best.pt, checkpoint.pt)")
    folder = _run_folder(run_dir)
    path = folder / ("best.pt" if which == "best" else "checkpoint.pt")
    if not path.exists():
        raise C.ConfigError(
            f"{folder} has no best.pt (a run from before spikeopt saved one); load the last "
            "epoch with which='last' (spikeopt export --which last)"
        )
    ck = io_out.load_checkpoint(path)
    state = ck.get("model") if which == "best" else ck.get("method", {}).get("model")
    if not isinstance(state, dict):
        raise C.ConfigError(f"{path} holds no model weights; it is not a spikeopt {which} file")
    cfg = C.apply(C.from_dict(C.load_yaml(str(folder / "config.yaml"))), {"trainer.device": device})
    with torch.random.fork_rng():  # building seeds torch; the caller's RNG stays as it was
        task = make_task(cfg, torch.device(device), bool(method_class(cfg).population))
    model = task.model
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise C.ConfigError(
            f"{path} does not fit the model {folder}/config.yaml builds ({str(err)[:160]}); "
            "was config.yaml edited, or was the model given from Python (Builders)?"
        ) from None
    info = {k: v for k, v in ck.items() if k in ("epoch", "metric", "value", "recipe")}
    if which == "last":
        info["epoch"] = ck.get("epoch")
    return model.eval(), info, tuple(task.example(1).shape[2:])


def load(run_dir: str | Path, which: str = "best", device: str = "cpu") -> nn.Module:
    """The trained model of a run folder: the best epoch's (``which="best"``) or the last's."""
    return restore(run_dir, which, device)[0]


def export(
    run_dir: str | Path,
    fmt: str,
    out: str | Path,
    force: bool = False,
    which: str = "best",
    dt: float = DEFAULT_DT,
) -> dict[str, Any]:
    """Write the run's model to ``out`` as ``fmt`` (state_dict | nir); returns what was written."""
    if fmt not in FORMATS:
        raise C.ConfigError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    target = Path(out)
    if target.is_dir():
        raise C.ConfigError(f"--out {target} is a folder; give a file name")
    if target.exists() and not force:
        raise C.ConfigError(f"--out {target} exists; add --force to overwrite it")
    model, info, shape = restore(run_dir, which)
    if fmt == "state_dict":
        io_out.save_checkpoint(target, model.state_dict())
    else:
        import nir

        from spikeopt.nir import to_nir

        graph = to_nir(model, dt, shape)  # a model NIR cannot express fails here, unwritten
        buf = io.BytesIO()
        nir.write(buf, graph)
        with io_out.atomic_open(target, "wb") as fh:
            fh.write(buf.getvalue())
    return {**info, "format": fmt, "out": str(target), "which": which}


def _command(args: argparse.Namespace) -> int:
    done = export(args.run_dir, args.format, args.out, args.force, args.which, args.dt)
    score = f", {done['metric']} {done['value']:.4f}" if "value" in done else ""
    print(f"wrote {done['out']} ({done['format']}, {args.which} epoch {done.get('epoch')}{score})")
    return 0


def add_parser(sub: Any) -> None:
    """The ``spikeopt export`` subcommand."""
    ex = sub.add_parser("export", help="write a run's trained model as a state_dict or NIR graph")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a run")
    ex.add_argument("--format", required=True, choices=FORMATS, help="state_dict or nir (HDF5)")
    ex.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    ex.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    which = "best: the best epoch (best.pt); last: the last (checkpoint.pt)"
    ex.add_argument("--which", default="best", choices=WHICH, help=which)
    dt = "nir: seconds per time step (tau = dt / (1 - beta)); snnTorch's import reads 1e-4"
    ex.add_argument("--dt", type=float, default=DEFAULT_DT, help=dt)
    ex.set_defaults(fn=_command)


__all__ = ["DEFAULT_DT", "FORMATS", "WHICH", "add_parser", "export", "load", "restore"]
