"""Multi-session runs: N seeds of one config, in parallel processes, one summary over them.

Session ``i`` runs with ``trainer.seed + i`` in ``OUT/session{i}`` (its own config, metrics,
checkpoint, summary). The top-level ``summary.json`` holds, for every numeric key the
sessions report, the mean over sessions under the key itself plus ``<key>_min`` and
``<key>_max``, and the per-session summaries under ``sessions`` (DESIGN.md). ``None`` values
(e.g. a session that never converged) are left out of a key's mean; ``<key>_count`` says how
many sessions had a value when some did not.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from spikeopt import config as C
from spikeopt.train import outputs as io
from spikeopt.train.loop import train


def _one(cfg: C.Config, out: Path, name: str) -> dict[str, Any]:
    """One session: finished ones are read back, interrupted ones resumed, others started."""
    if (out / "summary.json").exists():
        return dict(json.loads((out / "summary.json").read_text()))
    resume = (out / "checkpoint.pt").exists()
    return train(cfg, out, resume, quiet=True, name=name)


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, min and max over sessions of every numeric key, plus the sessions themselves."""
    out: dict[str, Any] = {"n_sessions": len(summaries)}
    keys = [k for k, v in summaries[0].items() if k not in ("seed", "versions")]
    for k in keys:
        first = summaries[0][k]
        if isinstance(first, str):
            out[k] = first
            continue
        vals = [s.get(k) for s in summaries]
        nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        nums = [v for v in nums if math.isfinite(v)]
        if not nums and any(isinstance(v, (dict, list)) for v in vals):
            continue
        out[k] = sum(nums) / len(nums) if nums else None
        out[f"{k}_min"] = min(nums) if nums else None
        out[f"{k}_max"] = max(nums) if nums else None
        if len(nums) != len(vals):
            out[f"{k}_count"] = len(nums)
    out["seeds"] = [s.get("seed") for s in summaries]
    out["versions"] = summaries[0].get("versions")
    out["sessions"] = summaries
    return out


def run_sessions(
    cfg: C.Config, out: Path, sessions: int, workers: int = 0, name: str = ""
) -> dict[str, Any]:
    """Run ``sessions`` seeds of ``cfg`` (``workers`` processes, 0 = one per core, at most
    one per session) and write the aggregate summary to ``out``."""
    if sessions < 1:
        raise C.ConfigError(f"--sessions must be >= 1, got {sessions}")
    if workers < 0:
        raise C.ConfigError(f"--workers must be >= 0 (0 = one per core), got {workers}")
    io.write_text(out / "config.yaml", C.dump_yaml(cfg))
    jobs = []
    for i in range(sessions):
        seed = cfg.trainer.seed + i
        jobs.append((C.apply(cfg, {"trainer.seed": seed, "trainer.progress": False}),
                     out / f"session{i}"))  # fmt: skip
    n = min(sessions, workers or os.cpu_count() or 1)
    if n == 1:
        summaries = [_one(c, o, name) for c, o in jobs]
    else:
        # spawn: a forked child would inherit the parent's torch thread pools
        with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_one, c, o, name) for c, o in jobs]
            summaries = [f.result() for f in futures]
    summary = aggregate(summaries)
    io.write_json(out / "summary.json", summary)
    return summary
