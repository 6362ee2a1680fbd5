"""The fallback for any other ``nn.Module``: ``torch.func.vmap`` over ``functional_call``.

Each member's parameters are materialised for the chunk (``theta + sigma eps_i``, (c, ...)),
and the module runs once under ``vmap``. Random ops inside the module need an explicit choice:

* ``randomness='same'``: every member sees the same draw -- common random numbers. The global
  RNG is rewound before every chunk, so the draw is also the same across chunks.
* ``randomness='different'``: every member draws its own numbers.

Every member gets its own copy of the module's buffers, so in-place buffer updates (batch-norm
running statistics in training mode) work under ``vmap`` and leave the model untouched. The
input is shared by every member (a minibatch, common random numbers) or, with
``per_member=True``, one per member along a leading axis (c, ...): each policy of a control
population sees its own observations.
spikeopt's own neurons run here too (a custom module built from them): under a transform they
take the plain step loop with a vmap-able spike function. A limit of ``vmap`` itself: an
``autograd.Function`` without ``setup_context`` (old-style ``forward(ctx, ...)``, as snnTorch's
and many users' surrogate spike functions are written) or without a vmap rule (Norse's
``SuperSpike``) cannot run under it. snnTorch neurons
hold theirs as ``spike_grad``: while members run it is swapped for the Heaviside step that every
snnTorch surrogate computes in its forward pass (a population method needs only the forward).
Any other such model runs its members one by one through the same ``functional_call`` (the
same members, the same RNG rule, outputs stacked the same way), which is slower.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from spikeopt.config import choose
from spikeopt.population.noise import ChunkNoise

RANDOMNESS: tuple[str, ...] = ("same", "different")
log = logging.getLogger(__name__)
# models whose forward cannot run under vmap (found on their first chunk): they loop instead
_LOOPED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class VmapForward:
    """``forward(chunk_noise) -> model outputs with a leading member axis (c, ...)``."""

    def __init__(
        self,
        model: nn.Module,
        named: list[tuple[str, nn.Parameter]],
        x: Tensor,
        randomness: str,
        per_member: bool = False,
    ) -> None:
        # functional_call writes the member tensors into every name of a module registered
        # twice (an alias) but restores only one of them: such a model runs on a throw-away
        # copy, or the original would be left holding batched tensors after vmap
        self.model = copy.deepcopy(model) if _aliased(model) else model
        self.named, self.x = named, x
        self.x_dim = 0 if per_member else None
        self.randomness = choose("es.vmap_randomness", randomness, RANDOMNESS)
        self.neurons = spiking_neurons(self.model)  # found once, not on every chunk
        self._rng = _rng_state(x.device) if randomness == "same" else None

    def __call__(self, noise: ChunkNoise) -> Any:
        """Outputs of every member of the chunk on the shared input."""
        params = {n: noise.weights(p) for n, p in self.named}
        buffers = {n: b.expand(noise.size, *b.shape).clone() for n, b in self.model.named_buffers()}
        if self._rng is not None:
            _set_rng_state(self._rng, self.x.device)

        def one(member: dict[str, Tensor], bufs: dict[str, Tensor], x: Tensor) -> Any:
            return functional_call(self.model, {**member, **bufs}, (x,))

        if self.model not in _LOOPED:
            batched = vmap(one, in_dims=(0, 0, self.x_dim), randomness=self.randomness)
            try:
                with hard_spikes(self.neurons):
                    return batched(params, buffers, self.x)
            except RuntimeError as err:
                # an autograd.Function vmap cannot run: old-style, or without a vmap rule
                if "setup_context" not in str(err) and "vmap support" not in str(err):
                    raise
                _LOOPED.add(self.model)
                log.warning(
                    "%s uses an autograd.Function that vmap cannot run (no setup_context or "
                    "no vmap rule): its population members run one by one",
                    type(self.model).__name__,
                )
                if self._rng is not None:
                    _set_rng_state(self._rng, self.x.device)
        outs = []
        for i in range(noise.size):
            if self._rng is not None and i:  # 'same': every member sees the same draw
                _set_rng_state(self._rng, self.x.device)
            member = {n: p[i] for n, p in params.items()}
            bufs = {n: b[i] for n, b in buffers.items()}
            outs.append(one(member, bufs, self.x if self.x_dim is None else self.x[i]))
        return pytree.tree_map(lambda *xs: torch.stack(xs), *outs)


def _aliased(model: nn.Module) -> bool:
    """True when a submodule or parameter of ``model`` is registered under two names."""
    modules = sum(1 for _ in model.named_modules(remove_duplicate=False))
    params = sum(1 for _ in model.named_parameters(remove_duplicate=False))
    return modules != len(list(model.modules())) or params != len(list(model.parameters()))


def _rng_state(device: torch.device) -> list[Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_state(states: list[Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)


def heaviside(v: Tensor) -> Tensor:
    """The spike of a membrane above threshold: the forward pass of every surrogate."""
    return (v > 0).to(v.dtype)


def spiking_neurons(model: nn.Module) -> list[Any]:
    """The snnTorch neurons of ``model``: modules holding a callable ``spike_grad`` (Any: a
    plain attribute nn.Module's types do not know)."""
    return [m for m in model.modules() if callable(getattr(m, "spike_grad", None))]


@contextmanager
def hard_spikes(neurons: list[Any]) -> Iterator[None]:
    """The neurons' ``spike_grad`` (an ``autograd.Function``, which vmap cannot run) swapped
    for :func:`heaviside` while the block runs, then restored."""
    held = [(m, m.spike_grad) for m in neurons]
    for m, _ in held:
        m.spike_grad = heaviside
    try:
        yield
    finally:
        for m, fn in held:
            m.spike_grad = fn
