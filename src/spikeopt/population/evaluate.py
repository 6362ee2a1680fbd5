"""Fitness of a whole population on one shared minibatch, chunk by chunk.

Every member sees the same batch ``x`` (B, T, ...) and labels ``y`` (B,) -- including the same
encoder noise, which the loop drew once (common random numbers). Members run in chunks of
``c``: the chunk's activity, about ``c * B * T * sum(N)`` floats a few times over, is what
must fit the memory budget; chunks of 32-64 members were measured fastest for the reference
network on 2 cores (bigger chunks fall out of cache, smaller ones pay per-op overhead).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from spikeopt.config import ConfigError
from spikeopt.functional.composite import WEIGHT_TERMS, member_weights
from spikeopt.population.layers import Context, snn_forward, supports
from spikeopt.population.node import NodeNoise, NodePerturbation
from spikeopt.population.noise import Noise, Offsets, Perturbation, perturbed
from spikeopt.population.quant import chunk_weights, quantised_members
from spikeopt.population.vmap import VmapForward

# Any population: seeded weight noise, explicit offsets, or seeded node (current) noise.
Source = Perturbation | Offsets | NodePerturbation

# loss(spikes_list, mems_list, y) -> (loss (c,), scores): spikeopt.functional.loss.Loss fits.
LossFn = Callable[[Sequence[Tensor], Sequence[Tensor], Tensor], tuple[Tensor, Any]]

DEFAULT_MEMORY_MB = 1024.0
# Bigger chunks gain nothing: per-op overhead is already amortised at 16-32 members, and the
# activity falls out of cache (reference network, 1 thread: 16 -> 357, 32 -> 372, 64 -> 290,
# 256 -> ~150 members/s, the last with fresh pages every generation).
MAX_AUTO_CHUNK = 64
# Full-rank members (es.mode=full | table) each carry a whole weight set: chunks of 16 ran
# faster than 32 or 58 (reference network, P = 512, one thread: 696 / 624 / 608 members per
# CPU-second from the table) and hold a quarter of the memory.
MAX_FULL_RANK_CHUNK = 16
# Floats alive per activity value at the peak of a chunk: the current, the fused LIF's
# pre-reset membranes, spikes and membranes, and one re-layout copy for the next layer.
_COPIES = 5


def chunk_size(
    model: nn.Module, x: Tensor, population: int, memory_mb: float, full_rank: bool = False
) -> int:
    """Members per batched pass: as many as fit ``memory_mb`` (at most MAX_AUTO_CHUNK, or
    MAX_FULL_RANK_CHUNK for ``full_rank`` members), then evened out so the chunks of the
    population have equal, even sizes (64 -> 32 + 32)."""
    was = model.training
    model.eval()  # the probe must not touch batch-norm statistics
    try:
        with torch.no_grad():
            spikes, _ = model(x[:1])
    finally:
        model.train(was)
    per_member = x.shape[0] * sum(s.numel() for s in spikes) * x.element_size() * _COPIES
    cap = MAX_FULL_RANK_CHUNK if full_rank else MAX_AUTO_CHUNK
    fit = max(2, min(population, cap, int(memory_mb * 2**20 // max(per_member, 1))))
    n = math.ceil(population / math.ceil(population / fit))
    return n + n % 2


def full_rank(source: Source) -> bool:
    """True for seeded full-rank weight noise (es.mode=full | table): chunks of those members
    are capped at MAX_FULL_RANK_CHUNK."""
    return isinstance(source, Perturbation) and source.mode != "lowrank"


def members_per_pass(
    model: nn.Module, x: Tensor, source: Source, chunk: int, memory_mb: float
) -> int:
    """The chunk ``evaluate`` runs ``source`` in: ``chunk`` when set, else :func:`chunk_size`
    (capped for full-rank members), never more than the population (shards align to it)."""
    n = source.population
    size = chunk if chunk > 0 else chunk_size(model, x, n, memory_mb, full_rank(source))
    return max(1, min(size, n))


def members_of(model: nn.Module, source: Source) -> Noise | Offsets | NodeNoise:
    """What hands out chunks of member noise for ``source`` (checked against ``model``)."""
    params = [p for _, p in perturbed(model)]
    if isinstance(source, Perturbation):
        return Noise(params, source)
    if isinstance(source, NodePerturbation):
        if not supports(model):
            raise ConfigError(
                "node perturbation runs on the batched path of models built from spikeopt "
                "layers (model.arch mlp | conv | rsnn); use method.name=es for other models"
            )
        return NodeNoise(model, params, source)
    if [id(p) for p in source.params] != [id(p) for p in params]:
        raise ValueError("Offsets must be built over population.perturbed(model)'s parameters")
    return source


def evaluate(
    model: nn.Module,
    pert: Source,
    batch: tuple[Tensor, Tensor],
    loss: LossFn,
    chunk: int = 0,
    memory_mb: float = DEFAULT_MEMORY_MB,
    randomness: str = "same",
) -> Tensor:
    """Fitness ``-loss`` (P,) of every member of ``pert`` on ``batch``; NaN/inf pass through.

    ``pert`` is a :class:`Perturbation` (noise regenerated from seeds), explicit
    :class:`Offsets` or a :class:`NodePerturbation` (current noise).
    Built-in SNNs take the batched low-rank path (:mod:`spikeopt.population.layers`; members
    of a quantised model run their own quantised weights, :mod:`spikeopt.population.quant`);
    any other module runs under ``vmap`` (its parametrisations quantise each member) with
    ``randomness`` ('same' | 'different'). ``chunk=0`` sizes chunks from ``memory_mb``.
    """
    fitness = torch.empty(pert.population, dtype=torch.float64)

    def score(m0: int, m1: int, spikes: list[Tensor], mems: list[Tensor]) -> None:
        losses, _ = loss(spikes, mems, batch[1])
        fitness[m0:m1] = -losses.detach().double().cpu()

    _chunks(model, pert, batch[0], score, chunk, memory_mb, randomness, _weighted(loss))
    return fitness


def evaluate_samples(
    model: nn.Module,
    pert: Source,
    batch: tuple[Tensor, Tensor],
    loss: Any,
    chunk: int = 0,
    memory_mb: float = DEFAULT_MEMORY_MB,
    activity: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Every member's loss split per sample: ``samples`` (P, B) and ``shared`` (P,) with
    ``loss = samples.mean(1) + shared`` (``loss.per_sample``; float64, on the CPU).

    With ``activity`` (a list, node perturbation only), each pair's half difference of its
    members' whole current at every node layer is appended to it, one (K, *shape) per layer
    (:meth:`~spikeopt.population.node.NodeNoise.record`)."""
    x, y = batch
    samples = torch.empty(pert.population, x.shape[0], dtype=torch.float64)
    shared = torch.empty(pert.population, dtype=torch.float64)

    def score(m0: int, m1: int, spikes: list[Tensor], mems: list[Tensor]) -> None:
        s, r = loss.per_sample(spikes, mems, y)
        samples[m0:m1], shared[m0:m1] = s.double().cpu(), r.double().cpu()

    _chunks(model, pert, x, score, chunk, memory_mb, "same", _weighted(loss), activity)
    return samples, shared


def _weighted(loss: Any) -> bool:
    """True when ``loss`` has a term that reads the run weights (scored per member)."""
    return any(t.name in WEIGHT_TERMS for t in getattr(loss, "terms", ()))


def _chunks(
    model: nn.Module,
    pert: Source,
    x: Tensor,
    score: Callable[[int, int, list[Tensor], list[Tensor]], None],
    chunk: int,
    memory_mb: float,
    randomness: str,
    weighted: bool = False,
    activity: list[Tensor] | None = None,
) -> None:
    """Run the members chunk by chunk and hand each chunk's outputs to ``score`` (with
    ``weighted``, while the loss's weight terms read every member's own run weights; with
    ``activity``, recording node layers' currents into it)."""
    named = perturbed(model)
    noise = members_of(model, pert)
    if activity is not None:
        if not isinstance(noise, NodeNoise):
            raise ValueError("activity is recorded for node perturbations only")
        activity.extend(noise.record())
    size = members_per_pass(model, x, pert, chunk, memory_mb)
    fast = supports(model)
    vmapped = None if fast else VmapForward(model, named, x, randomness)
    shared: dict[Any, Tensor] = {}  # computed once per generation, reused by every chunk
    # (not around vmap: a cached parametrisation would hand every member the centre's weight)
    with torch.no_grad(), quantised_members(model if fast else None) as exact:
        for m0 in range(0, pert.population, size):
            m1 = min(m0 + size, pert.population)
            members = noise.members(m0, m1)
            if vmapped is None:  # quantised weights: each member's formed and rounded (exact)
                ctx = Context(exact(members), shared)
                spikes, mems = snn_forward(model, x, ctx, keep_hidden=False)  # type: ignore[arg-type]
            else:
                spikes, mems = vmapped(members)
            with member_weights(chunk_weights(model, members) if weighted else None):
                score(m0, m1, spikes, mems)
