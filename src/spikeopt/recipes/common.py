"""Settings the zeroth-order recipes of several applications share."""

from __future__ import annotations

from typing import Any

# scikit-learn digits, repeated over T steps: the offline dataset every install has.
DIGITS: dict[str, Any] = {"data.name": "digits", "encoder.kind": "repeat", "encoder.steps": 16}

# ES on the predecessor's named experiments: its subset sizes, T, population and batch, with
# our method settings (low-rank noise, centered ranks, AdamW, an LI readout whose mean
# membrane gives ES a smooth loss). bench/configs/es-prototype.yaml restores its plain ES.
ES: dict[str, Any] = {
    "method.name": "es",
    "model.readout": "li",
    "loss.name": "ce_mean",
    "optim.name": "adamw",
    "optim.weight_decay": 0.05,
    "sched.name": "cosine",
    "trainer.eval_train": True,
}

# Node perturbation (zeroth-order, per-sample credit) with the defaults docs/training-methods.md
# derives: current noise at 0.1 of each layer's current std (scale-free, so it carries over
# between datasets and layer sizes), weights fitted to the data's statistics (model.init=fluct:
# every layer fires from fluctuations, whatever the input scale), a leaky-integrator readout
# whose mean membrane is a smooth loss, and Adam(W) at BPTT's step sizes: the estimate is a
# gradient in loss units, as BPTT's is. 16 members: per-sample credit gives B * 8 estimates per
# generation, and at equal wall time 8-32 members tied on digits (98.1-98.3 %), so fewer
# members buy more updates.
NODEPERT: dict[str, Any] = {
    "method.name": "nodepert",
    "es.population": 16,
    "nodepert.sigma": 0.1,
    "model.init": "fluct",
    "model.readout": "li",
    "loss.name": "ce_mean",
    "optim.name": "adamw",
    "optim.lr": 3e-3,
    "optim.weight_decay": 0.05,
    "sched.name": "cosine",
}
