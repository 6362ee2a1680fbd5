"""The recipe zoo: named (application x method x architecture) configurations.

One frozen :class:`Recipe` per entry, all registered in :data:`RECIPES` below -- the one
place to look. A recipe's config is ``Config()`` with its overrides applied; users layer a
YAML file and ``key=value`` overrides on top. What a run trains is a key like any other
(``trainer.task=control`` for the control recipes, ``trainer.forward_check=true`` for
``snn-forward``), so a run's ``config.yaml`` alone says how to continue it.
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
# ES on the predecessor's named experiments: its subset sizes, T, population and batch, with
# our method settings (low-rank noise, centered ranks, AdamW, an LI readout whose mean
# membrane gives ES a smooth loss). bench/configs/es-prototype.yaml restores its plain ES.
_ES = {
    "method.name": "es",
    "model.readout": "li",
    "loss.name": "ce_mean",
    "optim.name": "adamw",
    "optim.weight_decay": 0.05,
    "sched.name": "cosine",
    "trainer.eval_train": True,
}
# The predecessor's CIFAR protocol (subset sizes, repeat input, sigma) on a net ES can move
# and this machine can run: conv 8-16 with batch norm straight into the readout (~11.6k
# parameters; a 128-unit dense hidden layer added 262k and held ES at 27 %), T=4 and batch 64
# (8x cheaper per generation than its T=8, batch 256), population 128, 1000 generations.
# With batch norm the default init keeps every layer firing (without it the dense layer was
# ~85 % silent and ES stayed at chance). BPTT ceiling of this net on the 2048/1000 subsets:
# 51.4 % (15 epochs).
_CIFAR_ES = {
    **_CIFAR,
    **_ES,
    "encoder.steps": 4,
    "model.arch": "conv",
    "model.channels": [8, 16],
    "model.norm": "batch",
    "model.hidden": [],
    "es.population": 128,
    "es.sigma": 0.02,
    "optim.lr": 0.005,
    "data.batch_size": 64,
    "data.n_train": 2048,
    "data.n_test": 1000,
    "trainer.steps_per_epoch": 50,
    "trainer.epochs": 20,
}

# Control (docs/control.md). The predecessor's spiking navigation policy, setting for setting:
# 2 x 128 LIF, a constant current for 100 steps, sigmoid surrogate alpha = 1, Kaiming init with
# the output scaled by 0.01, REINFORCE with gamma 0.99, standardised returns, an EMA-0.05
# baseline, entropy 0.15 -> 0.01 over 50 episodes, lr 1e-3 shrinking 1.5 % per episode, value
# then norm clipping at 1, one episode per update.
_NAV_LEGACY = {
    "trainer.task": "control",
    "method.name": "reinforce",
    "env.name": "chemotaxis",
    "env.preset": "legacy-static-medium",
    "model.hidden": [128, 128],
    "model.readout": "li",
    "model.init": "kaiming",
    "model.out_scale": 0.01,
    "neuron.surrogate": "sigmoid",
    "neuron.alpha": 1.0,
    "neuron.reset": "zero",
    "encoder.steps": 100,
    "optim.lr": 1e-3,
    "optim.clip_value": 1.0,
    "optim.clip_norm": 1.0,
    "rl.episodes": 100,
    "trainer.device": "cpu",
}
# Our settings on the same network: 20 time steps, a shorter horizon (gamma 0.9) so each turn
# is credited with the distance it gained, a baseline-centred advantage, a constant small
# entropy bonus and a constant, larger learning rate (measured in docs/benchmarks.md).
_NAV = {
    **_NAV_LEGACY,
    "encoder.steps": 20,
    "optim.lr": 5e-3,
    "rl.lr_decay": 0.0,
    "rl.gamma": 0.9,
    "rl.normalize": "advantages",
    "rl.entropy_start": 0.01,
    "rl.entropy_end": 0.01,
}
# Spiking policies for gymnasium tasks: observations split into positive/negative currents.
_GYM_LIF = {
    "trainer.task": "control",
    "model.hidden": [64, 64],
    "model.readout": "li",
    "model.init": "kaiming",
    "model.out_scale": 0.1,
    "neuron.surrogate": "sigmoid",
    "neuron.alpha": 1.0,
    "encoder.steps": 16,
    "policy.obs_encoding": "signed",
    "trainer.device": "cpu",
}

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
            "LIF MLP on digits: ES searching along the last 4 surrogate gradients (~30 s)",
            # a guide direction gets n/k times the variance of any other: a small sigma
            {**_DIGITS_LI, "method.name": "guided-es", "optim.lr": 0.01, "es.sigma": 0.01},
        ),
        Recipe(
            "mnist1d-rsnn-surrogate",
            "sequence classification",
            "surrogate",
            "rsnn",
            "recurrent LIF network on MNIST-1D read as a 40-step sequence (5-tap delay line), "
            "slow LI readout, BPTT (~93 %)",
            {
                "data.name": "mnist1d",
                "data.normalize": True,
                "encoder.kind": "sequence",
                "encoder.window": 5,
                "model.arch": "rsnn",
                "model.hidden": [384],
                "model.readout": "li",
                # fast hidden neurons, slow readout: with tau 2 everywhere the mean readout of
                # sparse spikes gave timid logits and the net underfit at 70 %
                "neuron.tau_m": 2.0,
                "model.readout_tau": 40.0,
                "loss.name": "ce_mean",
                "optim.lr": 5e-3,
                "optim.clip_norm": 1.0,
                "sched.name": "cosine",
                "trainer.epochs": 40,
                "data.batch_size": 64,
            },
        ),
        Recipe(
            "mnist1d-conv-surrogate",
            "sequence classification",
            "surrogate",
            "conv",
            "1-D conv LIF network on MNIST-1D (the whole series each step, T=4), BPTT (~97 %)",
            {
                "data.name": "mnist1d",
                "data.normalize": True,
                "encoder.kind": "repeat",
                "encoder.steps": 4,
                "model.arch": "conv",
                "model.channels": [32, 64],
                "model.kernel_size": 5,
                "model.norm": "batch",
                "model.hidden": [128],
                "optim.lr": 5e-3,
                "sched.name": "cosine",
                "trainer.epochs": 40,
                "data.batch_size": 64,
            },
        ),
        Recipe(
            "mnist1d-es",
            "sequence classification",
            "es",
            "conv",
            "1-D conv LIF 16-32 straight into the readout (no dense hidden layer) on MNIST-1D, "
            "T=2, trained by low-rank ES",
            {
                **_ES,
                "data.name": "mnist1d",
                "data.normalize": True,
                "encoder.kind": "repeat",
                "encoder.steps": 2,
                "model.arch": "conv",
                # Few parameters (~6.5k) keep the ES estimate informative; a dense hidden layer
                # (+82k) or a single conv (BPTT ceiling ~57 %) were what held the old recipe back.
                "model.channels": [16, 32],
                "model.kernel_size": 5,
                "model.norm": "batch",
                "model.hidden": [],
                "es.population": 256,
                "es.sigma": 0.05,
                "optim.lr": 0.02,
                "data.batch_size": 64,
                "trainer.eval_train": False,
                "trainer.steps_per_epoch": 50,
                # 3000 generations: at 1000 the cosine schedule stopped it at 67-73 %.
                "trainer.epochs": 60,
            },
        ),
        Recipe(
            "mnist-es",
            "image classification",
            "es",
            "mlp",
            "the predecessor's mnist_es: MNIST 512/512, T=8, population 64, 300 generations "
            "(set data.root)",
            {
                **_MNIST,
                **_ES,
                "encoder.steps": 8,
                "data.normalize": True,
                "model.hidden": [256],
                "es.population": 64,
                "es.sigma": 0.03,
                "optim.lr": 0.01,
                "data.batch_size": 128,
                "data.n_train": 512,
                "data.n_test": 512,
                "trainer.steps_per_epoch": 10,
                "trainer.epochs": 30,
            },
        ),
        Recipe(
            "cifar10-es-repeat-small",
            "image classification",
            "es",
            "conv",
            "the predecessor's es_repeat_small: CIFAR-10 512/512, repeat input, "
            "population 128, 200 generations (T=4, batch 64)",
            {
                **_CIFAR_ES,
                "data.n_train": 512,
                "data.n_test": 512,
                "trainer.steps_per_epoch": 20,
                "trainer.epochs": 10,
            },
        ),
        Recipe(
            "cifar10-es-repeat-big",
            "image classification",
            "es",
            "conv",
            "the predecessor's es_repeat_big: CIFAR-10 2048/1000, repeat input, "
            "population 128, 1000 generations (conv 8-16 + batch norm, T=4, batch 64)",
            _CIFAR_ES,
        ),
        Recipe(
            "cifar10-es-norepeat-big",
            "image classification",
            "es",
            "conv",
            "control for cifar10-es-repeat-big: Bernoulli rate input instead of repeat",
            {**_CIFAR_ES, "encoder.kind": "rate", "data.normalize": False},
        ),
        Recipe(
            "cifar10-es-parallel",
            "image classification",
            "es",
            "conv",
            "the predecessor's es_parallel: CIFAR-10 2048/1000, a stochastic (Bernoulli) encoder "
            "inside the batched population, T=16, population 128",
            {
                **_CIFAR_ES,
                "encoder.kind": "rate",
                "data.normalize": False,
                "encoder.steps": 16,
                "es.population": 128,
                "trainer.steps_per_epoch": 20,
                "trainer.epochs": 10,
            },
        ),
        Recipe(
            "cifar10-es",
            "image classification",
            "es",
            "conv",
            "ES on the full CIFAR-10 (50k/10k), repeat input, batched low-rank population",
            {
                **_CIFAR_ES,
                "data.n_train": 0,
                "data.n_test": 0,
                "es.population": 256,
                "trainer.eval_train": False,
                "trainer.steps_per_epoch": 100,
                "trainer.epochs": 50,
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
            {**_DIGITS, "trainer.forward_check": True},
        ),
        Recipe(
            "nav-reinforce",
            "control: chemotaxis",
            "reinforce",
            "lif 2x128",
            "spiking worm finds food on the predecessor's static medium, REINFORCE, our settings",
            _NAV,
        ),
        Recipe(
            "nav-reinforce-legacy",
            "control: chemotaxis",
            "reinforce",
            "lif 2x128",
            "the predecessor's navigation run setting for setting (T=100, decaying lr/entropy)",
            _NAV_LEGACY,
        ),
        Recipe(
            "nav-reinforce-hard",
            "control: chemotaxis",
            "reinforce",
            "lif 2x128",
            "chemotaxis on 20x20 with random start/food and 60 steps (random policy ~3 %)",
            {**_NAV, "env.preset": "hard"},
        ),
        Recipe(
            "nav-mlp-reinforce",
            "control: chemotaxis",
            "reinforce",
            "mlp 2x128 (non-spiking)",
            "the non-spiking baseline: a ReLU MLP with nav-reinforce's REINFORCE settings",
            {**_NAV, "model.arch": "cnn", "encoder.steps": 1},
        ),
        Recipe(
            "nav-es",
            "control: chemotaxis",
            "es",
            "lif 2x128",
            "the spiking navigation policy trained by ES, the population stepped as one batch",
            {
                **_NAV,
                "method.name": "es",
                "es.population": 32,
                "es.sigma": 0.1,
                "optim.lr": 0.03,
                "optim.clip_value": 0.0,
                "optim.clip_norm": 0.0,
                "rl.batch_episodes": 4,
                "rl.generations": 20,
            },
        ),
        Recipe(
            "foraging-reinforce",
            "control: foraging",
            "reinforce",
            "lif 2x128",
            "the spiking worm eats respawning food on a 10x10 grid (foraging preset small)",
            {**_NAV, "env.name": "foraging", "env.preset": "small", "rl.episodes": 200},
        ),
        Recipe(
            "cartpole-lif-es",
            "control: gymnasium",
            "es",
            "lif 2x64",
            "CartPole-v1 with a spiking policy trained by ES (target: mean return >= 475)",
            {
                **_GYM_LIF,
                "method.name": "es",
                "env.name": "cartpole",
                "encoder.steps": 8,
                "policy.obs_scale": [0.5, 0.5, 8.0, 1.0],
                "es.population": 32,
                "es.sigma": 0.1,
                "optim.lr": 0.1,
                "rl.batch_episodes": 2,
                "rl.generations": 40,
                "rl.baseline_episodes": 20,
            },
        ),
        Recipe(
            "cartpole-reinforce",
            "control: gymnasium",
            "reinforce",
            "lif 2x64",
            "CartPole-v1 with a spiking policy trained by REINFORCE",
            {
                **_GYM_LIF,
                "method.name": "reinforce",
                "env.name": "cartpole",
                "encoder.steps": 8,
                "policy.obs_scale": [0.5, 0.5, 8.0, 1.0],
                "optim.lr": 0.01,
                "optim.clip_norm": 1.0,
                "rl.gamma": 0.99,
                "rl.normalize": "returns",
                "rl.lr_decay": 0.0,
                "rl.entropy_start": 0.01,
                "rl.entropy_end": 0.01,
                "rl.batch_episodes": 4,
                "rl.episodes": 200,
                "rl.baseline_episodes": 20,
            },
        ),
        Recipe(
            "acrobot-lif-es",
            "control: gymnasium",
            "es",
            "lif 2x64",
            "Acrobot-v1 with a spiking policy trained by ES",
            {
                **_GYM_LIF,
                "method.name": "es",
                "env.name": "acrobot",
                "encoder.steps": 8,
                "policy.obs_scale": [1.0, 1.0, 1.0, 1.0, 0.25, 0.1],
                "es.population": 32,
                "es.sigma": 0.1,
                "optim.lr": 0.1,
                "rl.batch_episodes": 2,
                "rl.generations": 40,
                "rl.baseline_episodes": 20,
            },
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
