"""The memory guard: how much RAM one trial needs, and how many trials fit at once.

A trial's peak is estimated from the dataset it holds, the model's activity on one batch
and a fixed per-process overhead, all measured on the config (nothing is trained)::

    data      = bytes of x/y train+test (x2: the loaded arrays and the normalised copy)
    activity  = spiking activity of one sample, sum over layers of T * N floats, times
                BPTT: batch * COPIES_BPTT  (saved states and surrogate derivatives)
                ES:   min(es.memory_mb, chunk * batch * COPIES_ES) -- the chunk budget
                eval: eval_batch_size * 2
    params    = parameters * 4 (weights, gradient, two Adam moments)
    total     = WORKER_MB + data + max(activity) + params

The guard caps concurrency at ``budget // total`` and refuses a request for more.
"""

from __future__ import annotations

from typing import Any

import torch

from spikeopt import config as C
from spikeopt.builders import Builders
from spikeopt.nn import build_model, n_params
from spikeopt.tasks.datasets import load_dataset
from spikeopt.tasks.encoders import make_encoder, step_shape

# RSS of a Ray trial process running a tiny digits-es config (population 16, 32 hidden):
# torch, Ray and spikeopt imported, data loaded -- measured 437-455 MB (Ray 2.60, torch 2.13).
WORKER_MB = 450.0
COPIES_BPTT = 8
COPIES_ES = 5  # as population.evaluate's _COPIES
POPULATION_METHODS = ("es", "snes", "cma", "hybrid", "guided-es")


def available_mb() -> float:
    """RAM the OS can give new processes now, in MB."""
    import psutil  # a dependency of Ray, so present wherever the guard runs

    return float(psutil.virtual_memory().available) / 2**20


def trial_mb(cfg: C.Config, builders: Builders | None = None) -> dict[str, float]:
    """Estimated peak RAM of one trial of ``cfg`` (with any user builders), in MB, by part."""
    b = builders or Builders()
    data = b.data(cfg) if b.data else load_dataset(cfg.data)
    tensors = (data.x_train, data.y_train, data.x_test, data.y_test)
    data_mb = 2 * sum(t.numel() * t.element_size() for t in tensors) / 2**20
    torch.manual_seed(cfg.trainer.seed)
    shape = step_shape(cfg.encoder, data.input_shape)
    model = (b.model or build_model)(cfg, shape, data.n_classes)
    with torch.no_grad():
        x = make_encoder(cfg.encoder)(data.x_train[:1], None)
        spikes, _ = model(x)
    per_sample = 4.0 * sum(s.numel() for s in spikes)  # bytes, all layers and steps
    batch = min(cfg.data.batch_size, len(data.x_train))
    if cfg.method.name in POPULATION_METHODS:
        e = cfg.es
        chunk = e.chunk if e.chunk > 0 else min(e.population, 64)
        train = min(e.memory_mb * 2**20, chunk * batch * per_sample * COPIES_ES)
    else:
        train = batch * per_sample * COPIES_BPTT
    evaluation = min(cfg.data.eval_batch_size, len(data.x_test)) * per_sample * 2
    params_mb = 4 * 4 * n_params(model) / 2**20
    activity_mb = max(train, evaluation) / 2**20
    total = WORKER_MB + data_mb + activity_mb + params_mb
    return {"data_mb": data_mb, "activity_mb": activity_mb, "params_mb": params_mb,
            "worker_mb": WORKER_MB, "total_mb": total}  # fmt: skip


def guard(per_trial_mb: float, requested: int, budget_mb: float) -> int:
    """How many trials may run at once: ``requested`` (0 = as many as fit) if it fits the
    budget, else a ConfigError with advice."""
    safe = int(budget_mb // per_trial_mb)
    advice = (
        "lower data.batch_size, data.eval_batch_size, es.memory_mb or the bound model sizes, "
        "use a subset (data.n_train/data.n_test), or raise the budget with "
        "set_memory_budget(MB) / --memory-mb if you know better"
    )
    if safe < 1:
        raise C.ConfigError(
            f"one trial needs ~{per_trial_mb:.0f} MB but the memory budget is "
            f"{budget_mb:.0f} MB; {advice}"
        )
    if requested > safe:
        raise C.ConfigError(
            f"{requested} concurrent trials need ~{requested * per_trial_mb:.0f} MB "
            f"(~{per_trial_mb:.0f} MB each) but the memory budget is {budget_mb:.0f} MB: "
            f"at most {safe} fit; set_max_concurrent_trials({safe}) (--max-concurrent {safe}), "
            f"or {advice}"
        )
    return requested or safe


def describe(parts: dict[str, Any]) -> str:
    """One line: the estimate and its parts."""
    return (
        f"~{parts['total_mb']:.0f} MB per trial (worker {parts['worker_mb']:.0f}, data "
        f"{parts['data_mb']:.1f}, activity {parts['activity_mb']:.1f}, params "
        f"{parts['params_mb']:.1f})"
    )
