"""The fallback for any other ``nn.Module``: ``torch.func.vmap`` over ``functional_call``.

Each member's parameters are materialised for the chunk (``theta + sigma eps_i``, (c, ...)),
and the module runs once under ``vmap``. Random ops inside the module need an explicit choice:

* ``randomness='same'``: every member sees the same draw -- common random numbers. The global
  RNG is rewound before every chunk, so the draw is also the same across chunks.
* ``randomness='different'``: every member draws its own numbers.

Every member gets its own copy of the module's buffers, so in-place buffer updates (batch-norm
running statistics in training mode) work under ``vmap`` and leave the model untouched.
spikeopt's own neurons run here too (a custom module built from them): under a transform they
take the plain step loop with a vmap-able spike function. A limit of ``vmap`` itself: a
user's ``autograd.Function`` without ``setup_context`` (old-style ``forward(ctx, ...)``)
cannot run under it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from spikeopt.config import choose
from spikeopt.population.noise import ChunkNoise

RANDOMNESS: tuple[str, ...] = ("same", "different")


class VmapForward:
    """``forward(chunk_noise) -> model outputs with a leading member axis (c, ...)``."""

    def __init__(
        self, model: nn.Module, named: list[tuple[str, nn.Parameter]], x: Tensor, randomness: str
    ) -> None:
        self.model, self.named, self.x = model, named, x
        self.randomness = choose("es.vmap_randomness", randomness, RANDOMNESS)
        self._rng = _rng_state(x.device) if randomness == "same" else None

    def __call__(self, noise: ChunkNoise) -> Any:
        """Outputs of every member of the chunk on the shared input."""
        params = {n: noise.weights(p) for n, p in self.named}
        buffers = {n: b.expand(noise.size, *b.shape).clone() for n, b in self.model.named_buffers()}
        if self._rng is not None:
            _set_rng_state(self._rng, self.x.device)

        def one(member: dict[str, Tensor], bufs: dict[str, Tensor]) -> Any:
            return functional_call(self.model, {**member, **bufs}, (self.x,))

        return vmap(one, randomness=self.randomness)(params, buffers)


def _rng_state(device: torch.device) -> list[Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_state(states: list[Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)
