"""The memory guard: how much RAM one trial needs, and how many trials fit at once.

A trial's peak is estimated from the data it holds, the model's activity on one input and a
fixed per-process overhead, all measured on the config (nothing is trained)::

    data      = classification: bytes of x/y train+test (x2: loaded arrays, normalised copy)
                control: 0 (an environment holds a few arrays)
    activity  = spiking activity of one input, sum over layers of T * N floats, times
                BPTT:       batch * COPIES_BPTT   (saved states and surrogate derivatives)
                population: min(es.memory_mb, chunk * batch * COPIES_ES) -- the chunk budget
                eval:       eval batch * 2
                where for control one input is one observation, a BPTT (REINFORCE) batch
                every step of rl.batch_episodes episodes, a population batch the
                rl.batch_episodes environments each member acts in, the eval batch
                rl.eval_episodes environments
    params    = parameters * 4 (weights, gradient, two Adam moments)
    total     = WORKER_MB + data + max(activity) + params

The guard caps concurrency at ``budget // total`` and refuses a request for more.
"""

from __future__ import annotations

from typing import Any

import torch

from spikeopt import config as C
from spikeopt.builders import Builders
from spikeopt.nn import n_params
from spikeopt.tasks.classification import ClassificationTask
from spikeopt.tasks.control import ControlTask
from spikeopt.train.experiment import make_task, method_class

# RSS of a Ray trial process running a tiny digits-es config (population 16, 32 hidden):
# torch, Ray and spikeopt imported, data loaded -- measured 437-455 MB (Ray 2.60, torch 2.13).
WORKER_MB = 450.0
COPIES_BPTT = 8
COPIES_ES = 5  # as population.evaluate's _COPIES


def available_mb() -> float:
    """RAM the OS can give new processes now, in MB."""
    import psutil  # a dependency of Ray, so present wherever the guard runs

    return float(psutil.virtual_memory().available) / 2**20


def _sizes(cfg: C.Config, task: Any) -> tuple[float, int, int, int]:
    """(data bytes, BPTT batch, population batch, eval batch) of a task, in inputs."""
    if isinstance(task, ClassificationTask):
        d = task.data
        tensors = (d.x_train, d.y_train, d.x_test, d.y_test)
        data = 2.0 * sum(t.numel() * t.element_size() for t in tensors)
        batch = min(cfg.data.batch_size, len(d.x_train))
        return data, batch, batch, min(cfg.data.eval_batch_size, len(d.x_test))
    assert isinstance(task, ControlTask)
    r = cfg.rl
    return 0.0, r.batch_episodes * task.env.max_steps, r.batch_episodes, max(1, r.eval_episodes)


def trial_mb(cfg: C.Config, builders: Builders | None = None) -> dict[str, float]:
    """Estimated peak RAM of one trial of ``cfg`` (with any user builders), in MB, by part."""
    population = bool(method_class(cfg).population)
    task = make_task(cfg, torch.device("cpu"), population, builders)
    with torch.no_grad():
        spikes, _ = task.model(task.example(1))
    per_input = 4.0 * sum(s.numel() for s in spikes)  # bytes, all layers and steps
    data_bytes, bptt, pop_batch, eval_batch = _sizes(cfg, task)
    if population:
        e = cfg.es
        chunk = e.chunk if e.chunk > 0 else min(e.population, 64)
        train = min(e.memory_mb * 2**20, chunk * pop_batch * per_input * COPIES_ES)
    else:
        train = bptt * per_input * COPIES_BPTT
    evaluation = eval_batch * per_input * 2
    params_mb = 4 * 4 * n_params(task.model) / 2**20
    activity_mb = max(train, evaluation) / 2**20
    data_mb = data_bytes / 2**20
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
