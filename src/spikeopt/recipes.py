"""The recipe zoo: named (application x method x architecture) configurations.

One frozen :class:`Recipe` per entry, all registered in :data:`RECIPES` below -- the one
place to look. A recipe's config is ``Config()`` with its overrides applied; users layer a
YAML file and ``key=value`` overrides on top.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from spikeopt.config import Config, ConfigError, apply


@dataclass(frozen=True)
class Recipe:
    """A named, documented starting configuration."""

    name: str
    application: str
    method: str
    architecture: str
    summary: str
    overrides: dict[str, Any] = field(default_factory=dict)
    entry: str = "train"  # what `spikeopt run` does with it: train | forward-check

    def config(self) -> Config:
        """The recipe's resolved default config."""
        return apply(Config(), self.overrides)


_DIGITS = {"data.name": "digits", "encoder.kind": "repeat", "encoder.steps": 16}
_MNIST = {"data.name": "mnist", "encoder.kind": "repeat", "encoder.steps": 16}
# One small model that BPTT and ES both train: the common ground of the hybrid recipes and of
# `spikeopt compare` (a leaky-integrator readout keeps the loss smooth for ES).
_DIGITS_LI = {
    **_DIGITS,
    "encoder.steps": 8,
    "data.normalize": True,
    "model.hidden": [128],
    "model.readout": "li",
    "loss.name": "ce_mean",
    "es.population": 64,
    "optim.lr": 2e-3,
    "sched.name": "cosine",
    "trainer.epochs": 20,
    "data.batch_size": 64,
}
_CIFAR = {"data.name": "cifar10", "data.normalize": True, "encoder.kind": "repeat"}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "digits-surrogate",
            "image classification",
            "surrogate",
            "conv",
            "conv LIF network on scikit-learn digits with BPTT: the demo default (~1 min, 2 cores)",
            {
                **_DIGITS,
                "data.normalize": True,
                "model.arch": "conv",
                "model.channels": [16, 32],
                "model.norm": "batch",
                "model.hidden": [128],
                "optim.lr": 2e-3,
                "sched.name": "cosine",
                "trainer.epochs": 30,
                "data.batch_size": 64,
            },
        ),
        Recipe(
            "digits-mlp-surrogate",
            "image classification",
            "surrogate",
            "mlp",
            "two-layer LIF MLP on scikit-learn digits with BPTT (~10 s on 2 cores)",
            {
                **_DIGITS,
                "data.normalize": True,
                "model.hidden": [256, 256],
                "optim.lr": 2e-3,
                "sched.name": "cosine",
                "trainer.epochs": 30,
                "data.batch_size": 64,
            },
        ),
        Recipe(
            "digits-es",
            "image classification",
            "es",
            "mlp",
            "LIF MLP on digits trained by low-rank ES, population batched (~97.5 %, ~2.5 min)",
            {
                **_DIGITS,
                "encoder.steps": 8,
                "data.normalize": True,
                "model.hidden": [256],
                "model.readout": "li",
                "model.dropout": 0.2,
                "loss.name": "ce_mean",
                "method.name": "es",
                "es.population": 256,
                "es.sigma": 0.05,
                "optim.name": "adamw",
                "optim.lr": 0.01,
                "optim.weight_decay": 0.1,
                "sched.name": "cosine",
                "trainer.epochs": 40,
                "data.batch_size": 128,
            },
        ),
        Recipe(
            "digits-hybrid",
            "image classification",
            "hybrid",
            "mlp",
            "LIF MLP on digits: BPTT plus an ES correction at 10 % of the surrogate step (~20 s)",
            {**_DIGITS_LI, "method.name": "hybrid", "hybrid.normalize": True, "hybrid.lam": 0.1},
        ),
        Recipe(
            "digits-guided-es",
            "image classification",
            "guided-es",
            "mlp",
            "LIF MLP on digits: ES searching along the last 4 surrogate gradients (~20 s)",
            {**_DIGITS_LI, "method.name": "guided-es", "optim.lr": 0.01},
        ),
        Recipe(
            "mnist1d-rsnn-surrogate",
            "sequence classification",
            "surrogate",
            "rsnn",
            "recurrent LIF network on MNIST-1D read as a 40-step sequence (5-tap delay line), BPTT",
            {
                "data.name": "mnist1d",
                "data.normalize": True,
                "encoder.kind": "sequence",
                "encoder.window": 5,
                "model.arch": "rsnn",
                "model.hidden": [256],
                "model.readout": "li",
                "neuron.tau_m": 2.0,
                "loss.name": "ce_mean",
                "optim.lr": 5e-3,
                "sched.name": "cosine",
                "trainer.epochs": 60,
                "data.batch_size": 64,
            },
        ),
        Recipe(
            "mnist-surrogate",
            "image classification",
            "surrogate",
            "mlp",
            "LIF MLP on MNIST from IDX files (set data.root), BPTT",
            {**_MNIST, "model.hidden": [256], "trainer.epochs": 10, "sched.name": "cosine"},
        ),
        Recipe(
            "fashion-surrogate",
            "image classification",
            "surrogate",
            "mlp",
            "LIF MLP on Fashion-MNIST from IDX files (set data.root), BPTT",
            {
                **_MNIST,
                "data.name": "fashion",
                "model.hidden": [256],
                "trainer.epochs": 10,
                "sched.name": "cosine",
            },
        ),
        Recipe(
            "cifar10-surrogate",
            "image classification",
            "surrogate",
            "conv",
            "conv LIF network on CIFAR-10 (set data.root), repeat encoding, batch norm, BPTT",
            {
                **_CIFAR,
                "encoder.steps": 4,
                "model.arch": "conv",
                "model.channels": [64, 128, 256],
                "model.norm": "batch",
                "model.hidden": [256],
                "model.readout": "li",
                "loss.name": "ce_mean",
                "data.augment": "flip-crop",
                "optim.lr": 1e-3,
                "sched.name": "cosine",
                "trainer.epochs": 30,
            },
        ),
        Recipe(
            "cnn-baseline",
            "image classification",
            "backprop (non-spiking)",
            "cnn",
            "non-spiking CNN (or MLP for vectors): checks that data and loop are right",
            {
                **_DIGITS,
                "data.normalize": True,
                "encoder.steps": 1,
                "model.arch": "cnn",
                "model.hidden": [128],
                "loss.name": "ce_mean",
                "trainer.epochs": 20,
            },
        ),
        Recipe(
            "snn-forward",
            "check",
            "none",
            "any",
            "one forward pass: prints every layer's (B, T, N) shape and checks the loss is finite",
            {**_DIGITS},
            entry="forward-check",
        ),
    ]
}


def list_recipes(**filters: str) -> list[Recipe]:
    """Recipes whose fields contain the given values, e.g. ``list_recipes(method="es")``."""
    return [
        r
        for r in RECIPES.values()
        if all(v.lower() in str(getattr(r, k)).lower() for k, v in filters.items())
    ]


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; the error suggests the nearest names."""
    if name not in RECIPES:
        near = difflib.get_close_matches(name, list(RECIPES), n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"unknown recipe '{name}'{hint} (`spikeopt list` shows all)")
    return RECIPES[name]
