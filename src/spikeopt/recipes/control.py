"""Closed-loop control recipes: chemotaxis, foraging and gymnasium tasks (docs/control.md)."""

from __future__ import annotations

from spikeopt.recipes.base import Recipe

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

RECIPES: list[Recipe] = [
    Recipe(
        "nav-reinforce",
        "control",
        "spiking worm finds food on the predecessor's static medium, REINFORCE, our settings",
        _NAV,
    ),
    Recipe(
        "nav-reinforce-legacy",
        "control",
        "the predecessor's navigation run setting for setting (T=100, decaying lr/entropy)",
        _NAV_LEGACY,
    ),
    Recipe(
        "nav-reinforce-hard",
        "control",
        "chemotaxis on 20x20 with random start/food and 60 steps (random policy ~3 %)",
        {**_NAV, "env.preset": "hard"},
    ),
    Recipe(
        "nav-mlp-reinforce",
        "control",
        "the non-spiking baseline: a ReLU MLP with nav-reinforce's REINFORCE settings",
        {**_NAV, "model.arch": "cnn", "encoder.steps": 1},
    ),
    Recipe(
        "nav-es",
        "control",
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
        "control",
        "the spiking worm eats respawning food on a 10x10 grid (foraging preset small)",
        {**_NAV, "env.name": "foraging", "env.preset": "small", "rl.episodes": 200},
    ),
    Recipe(
        "cartpole-lif-es",
        "control",
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
        "control",
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
        "control",
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
