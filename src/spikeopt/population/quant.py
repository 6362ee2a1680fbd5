"""Parametrised members on the batched path: each member runs its own constrained weights.

The batched layers (:mod:`spikeopt.population.layers`, :mod:`spikeopt.population.conv`) read a
weight's member noise through ``ctx.noise[w]`` and, where that is a full tensor, the members'
weights through ``ctx.noise.weights(w)``. :class:`QuantisedChunk` answers both, for every
perturbed parametrised weight (quantised, sign-annealed, Dale), with the members' weights
(c, *shape): each member's originals ``theta + sigma eps_m`` are formed here (a low-rank ``A B^T``
is materialised for the chunk -- weights of these networks are small next to their activity)
and run through the weight's parametrisations with a member axis: a quantiser rounds each
member with its own scale (:func:`spikeopt.nn.quant.quantize`), a sign parametrisation applies
the member's own sign parameters. So the layers take their full-rank branch and no member ever
runs the constrained centre plus float noise.

``w`` is the parametrised weight a layer reads (``fc.weight``): under ``parametrize.cached()``
it is one tensor for the whole evaluation, so it can be looked up by identity. A weight without
member noise (node perturbation's dense weights) is left out: every member reads the cached
centre weight on the shared fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.nn.utils import parametrize

from spikeopt.nn.hw import effective, weight_layers
from spikeopt.nn.quant import Quantizer, quantize
from spikeopt.population.noise import ChunkNoise, Eps

# (the weight the layer reads, the module whose parametrisations form it)
Entry = tuple[Tensor, nn.Module]


def originals(module: nn.Module) -> list[Tensor]:
    """The parameters a parametrised ``weight`` is formed from (``original`` or ``original0..``)."""
    plist: Any = module.parametrizations["weight"]  # type: ignore[index]
    if hasattr(plist, "original"):
        return [plist.original]
    count = len(list(plist.named_parameters(recurse=False)))
    return [getattr(plist, f"original{i}") for i in range(count)]


def form(module: nn.Module, members: list[Tensor]) -> Tensor:
    """The weights (c, *shape) that ``module``'s parametrisations make of member originals."""
    plist: Any = module.parametrizations["weight"]  # type: ignore[index]
    out: Any = members
    for i, p in enumerate(plist):
        args = out if i == 0 else [out]
        if isinstance(p, Quantizer):
            out = quantize(args[0], p.bits, p.per_channel, lead=1)
        else:
            out = p.members(*args, lead=1)
    return out  # type: ignore[no-any-return]


def chunk_weights(model: nn.Module, chunk: ChunkNoise) -> list[Tensor]:
    """Every weight layer's run weights for each member of ``chunk`` (c, *shape)."""
    out = []
    for _, m in weight_layers(model):
        if parametrize.is_parametrized(m, "weight"):
            out.append(form(m, [chunk.weights(o) for o in originals(m)]))
        else:
            out.append(chunk.weights(effective(m)))
    return out


class QuantisedChunk(ChunkNoise):
    """A chunk's noise whose parametrised weights answer with each member's own weights."""

    def __init__(self, chunk: ChunkNoise, entries: list[Entry]) -> None:
        super().__init__(
            chunk._params, chunk._eps, chunk.sigma, chunk.node, chunk.size, chunk._pairs,
            chunk.taps,
        )  # fmt: skip
        self._quant: dict[int, Tensor] = {}
        for w, module in entries:
            found = originals(module)
            if any(chunk[o] is not None for o in found):  # members perturb it: form each one
                self._quant[id(w)] = form(module, [chunk.weights(o) for o in found])

    def __getitem__(self, p: Tensor | None) -> Eps | None:
        """A parametrised weight's member weights (a full tensor: the layers' full-rank branch);
        any other parameter's noise as before."""
        if p is not None and id(p) in self._quant:
            return self._quant[id(p)]
        return super().__getitem__(p)

    def pair(self, p: Tensor) -> Tensor | None:
        """None for a parametrised weight: its members are formed, not centre + noise."""
        return None if id(p) in self._quant else super().pair(p)

    def weights(self, p: Tensor) -> Tensor:
        """Member values (c, *p.shape): formed by the parametrisations for a parametrised one."""
        if id(p) in self._quant:
            return self._quant[id(p)]
        return super().weights(p)


@contextmanager
def quantised_members(model: nn.Module | None) -> Iterator[Callable[[ChunkNoise], ChunkNoise]]:
    """Inside the block, ``wrap(chunk)`` is chunk noise that runs every member of ``model``
    on the batched path with its own parametrised weights (``chunk`` itself when nothing is
    parametrised, or for ``None``). Never around ``vmap``/``functional_call``: the cache would
    hand every member the centre's quantised weight."""
    found = [m for _, m in weight_layers(model)] if model is not None else []
    found = [m for m in found if parametrize.is_parametrized(m, "weight")]
    if not found:
        yield lambda chunk: chunk
        return
    with parametrize.cached():  # each layer's weight is now one tensor: its id is its key
        entries: list[Entry] = [(m.weight, m) for m in found]  # type: ignore[misc]
        yield lambda chunk: QuantisedChunk(chunk, entries)
