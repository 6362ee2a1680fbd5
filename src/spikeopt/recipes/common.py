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
