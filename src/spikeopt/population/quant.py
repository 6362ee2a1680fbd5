"""Quantised members on the batched path: each member runs ``q(theta + sigma eps_m)`` exactly.

The batched layers (:mod:`spikeopt.population.layers`, :mod:`spikeopt.population.conv`) read a
weight's member noise through ``ctx.noise[w]`` and, where that is a full tensor, the members'
weights through ``ctx.noise.weights(w)``. :class:`QuantisedChunk` answers both, for every
perturbed quantised weight, with the members' quantised weights (c, *shape): formed here (a
low-rank ``A B^T`` is materialised for the chunk -- weights of these networks are small next to
their activity) and rounded with each member's own scale (:func:`spikeopt.nn.quant.quantize`).
So the layers take their full-rank branch and no member ever runs ``q(theta)`` plus float noise.

``w`` is the parametrised weight a layer reads (``fc.weight``): under ``parametrize.cached()``
it is one tensor for the whole evaluation, so it can be looked up by identity. A weight without
member noise (node perturbation's dense weights) is left out: every member reads the cached
quantised centre ``q(theta)`` on the shared fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn
from torch.nn.utils import parametrize

from spikeopt.nn.quant import Quantizer, quantize, quantizers
from spikeopt.population.noise import ChunkNoise, Eps

# (the weight the layer reads, its float original, its quantiser)
Entry = tuple[Tensor, Tensor, Quantizer]


class QuantisedChunk(ChunkNoise):
    """A chunk's noise whose quantised weights answer with each member's quantised weights."""

    def __init__(self, chunk: ChunkNoise, entries: list[Entry]) -> None:
        super().__init__(chunk._params, chunk._eps, chunk.sigma, chunk.node, chunk.size)
        self._quant: dict[int, Tensor] = {}
        for w, original, q in entries:
            if chunk[original] is not None:  # members perturb it: form and round each one
                members = chunk.weights(original)  # (c, *shape), float
                self._quant[id(w)] = quantize(members, q.bits, q.per_channel, lead=1)

    def __getitem__(self, p: Tensor | None) -> Eps | None:
        """A quantised weight's member weights (a full tensor: the layers' full-rank branch);
        any other parameter's noise as before."""
        if p is not None and id(p) in self._quant:
            return self._quant[id(p)]
        return super().__getitem__(p)

    def weights(self, p: Tensor) -> Tensor:
        """Member values (c, *p.shape): quantised for a quantised weight."""
        if id(p) in self._quant:
            return self._quant[id(p)]
        return super().weights(p)


@contextmanager
def quantised_members(model: nn.Module | None) -> Iterator[Callable[[ChunkNoise], ChunkNoise]]:
    """Inside the block, ``wrap(chunk)`` is chunk noise that runs every member of ``model``
    on the batched path with its own quantised weights (``chunk`` itself when nothing is
    quantised, or for ``None``). Never around ``vmap``/``functional_call``: the cache would
    hand every member the centre's quantised weight."""
    found = quantizers(model) if model is not None else []
    if not found:
        yield lambda chunk: chunk
        return
    with parametrize.cached():  # each layer's weight is now one tensor: its id is its key
        entries: list[Entry] = [(q.module.weight, q.original, q.quantizer) for q in found]  # type: ignore[misc]
        yield lambda chunk: QuantisedChunk(chunk, entries)
