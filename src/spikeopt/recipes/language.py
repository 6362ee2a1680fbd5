"""Character-level language modelling recipes on the standard library's pydoc topic texts
(docs/language.md): an S5-style state-space stack, a recurrent spiking network and the GRU
baseline, each about 120k parameters, trained by BPTT for the same number of steps on the
same windows."""

from __future__ import annotations

from typing import Any

from spikeopt.recipes.base import Recipe

# The shared budget: 64-character windows (truncated BPTT), 32 per step, the same steps, Adam
# with a cosine schedule and clipping, one test pass per epoch.
LANGUAGE: dict[str, Any] = {
    "trainer.task": "language",
    "method.name": "surrogate",
    "lang.seq_len": 64,
    "data.batch_size": 32,
    "data.eval_batch_size": 256,
    "trainer.epochs": 10,
    "trainer.steps_per_epoch": 150,
    "optim.lr": 3e-3,
    "optim.clip_norm": 1.0,
    "sched.name": "cosine",
}

RECIPES: list[Recipe] = [
    Recipe(
        "language-s5",
        "language",
        "S5-style diagonal state-space stack (2 blocks, width 128, 64 complex states) on "
        "pydoc's topic texts, next-character BPTT, bits per character and samples.txt",
        {**LANGUAGE, "model.arch": "s5", "model.hidden": [128, 128], "lang.states": 64},
    ),
    Recipe(
        "language-rsnn",
        "language",
        "recurrent LIF network (256 neurons) with a leaky-integrator readout over the "
        "characters on pydoc's topic texts, surrogate-gradient BPTT, bits per character",
        {
            **LANGUAGE,
            "model.arch": "rsnn",
            "model.hidden": [256],
            # fast membranes: the recurrent spikes carry the context. At 150 steps (test bits
            # per character, gradients through the reset): tau 2 -> 2.73, 1 -> 2.57, 0.5 -> 2.52;
            # with the reset detached, tau 2 -> 2.77 (docs/language.md)
            "neuron.tau_m": 0.5,
            "neuron.detach_reset": False,
            "model.readout_tau": 1.0,
        },
    ),
    Recipe(
        "language-gru",
        "language",
        "GRU baseline (width 128, ~126k parameters) for the language recipes: same windows, "
        "steps and optimizer",
        {**LANGUAGE, "model.arch": "gru", "model.hidden": [128]},
    ),
]
