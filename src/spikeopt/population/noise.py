"""Perturbation noise: regenerated from ``(seed, generation, member)``, never stored whole.

Member ``m`` of a population of ``P`` (even) is ``theta_m = theta + sigma * s_m * eps_k`` with
pair ``k = m // 2`` and sign ``s_m = +1`` for even ``m``, ``-1`` for odd ``m`` (antithetic
pairs). Per parameter ``p``:

* ``mode='full'``, or any parameter with fewer than 2 dims (biases, per-neuron tau or
  threshold, batch-norm affine): ``eps_k ~ N(0, 1)`` shaped like ``p``.
* ``mode='lowrank'`` and ``p.dim() >= 2``: ``eps_k = A_k B_k^T`` with ``A_k`` (out, r) ~
  N(0, 1/r) and ``B_k`` (in, r) ~ N(0, 1), where ``out = p.shape[0]`` and ``in`` is the product
  of the other dims (a conv kernel is flattened to (C_out, C_in*k*k)). The 1/r variance of A
  gives every entry of ``A B^T`` unit variance, so ``sigma`` means the same in both modes.
  For ``nn.Linear`` (``y = x W^T``) the member's output is ``x W^T + sigma (x B) A^T``.
* ``mode='table'``: full-rank noise read from a shared table of normals (OpenAI-ES): pair
  ``k``'s noise for all parameters is one window ``table[o_k : o_k + L]`` (``L`` = perturbed
  parameter count) at an offset drawn from ``(seed, generation, k)``; the table itself is
  drawn once per run from ``seed``. Generating a member costs a copy instead of ``L`` fresh
  normals (~9 ns each on a CPU). Entries of two pairs' windows at different offsets are
  distinct draws, so members stay uncorrelated; :func:`table_size` picks the table's length.
  Offsets are whole rows of the first parameter's matrix view (``table`` seen as (R, in)),
  distinct within a generation (an even stride through the rows from a random start), so the first
  weight's noise of every pair is a run of rows of one fixed matrix: the batched layer on the
  shared input computes ``x T^T`` once and reads each pair's ``x E_k^T`` as a slice of it.

Pairs are produced in blocks of :data:`PAIRS_PER_BLOCK`; each (block, parameter) draws from its
own ``torch.Generator`` seeded by a hash of ``(seed, generation, block, parameter index)``. So a
member's noise does not depend on how the population is chunked, any worker can regenerate any
member from four integers (distributed ES ships seeds, not noise), and at most one block is
held in memory at a time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from spikeopt.config import ConfigError, choose

MODES: tuple[str, ...] = ("lowrank", "full", "table")
PAIRS_PER_BLOCK = 8  # few generator seedings per generation, little waste for tiny populations
# Default table: 2^22 normals (16 MiB in float32), or 4 windows of the parameters if larger.
# An offset has millions of places to land, so two pairs of a generation of P members share
# one with probability ~P^2 / 2^23 (0.8 % at P = 512; a shared offset only repeats a pair).
TABLE_MIN = 2**22
_TABLE_STREAM = 0x7AB1E
_table_cache: dict[tuple[int, int, str, torch.dtype], Tensor] = {}

# Per-parameter noise for a run of pairs or members: a full tensor E (K, *p.shape), or the
# low-rank factors (A (K, out, r), B (K, in, r)).
Eps = Tensor | tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Perturbation:
    """How one generation's population is spread around the centre parameters."""

    population: int
    sigma: float
    rank: int = 1
    mode: str = "lowrank"
    seed: int = 0
    generation: int = 0
    table: int = 0  # mode='table': entries of the noise table (0 = table_size's default)

    def __post_init__(self) -> None:
        choose("es.mode", self.mode, MODES)
        if self.table < 0:
            raise ConfigError(f"es.table_size must be >= 0 (0 = automatic), got {self.table}")
        if self.population < 2 or self.population % 2:
            raise ConfigError(
                f"es.population must be even and >= 2 (antithetic pairs), got {self.population}"
            )
        if not self.sigma > 0:
            raise ConfigError(f"es.sigma must be > 0, got {self.sigma}")
        if self.rank < 1:
            raise ConfigError(f"es.rank must be >= 1, got {self.rank}")


def perturbed(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters ES perturbs: every trainable one, in ``named_parameters`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def stream_seed(seed: int, stream: int) -> int:
    """A seed for an independent noise stream ``stream`` of a run whose seed is ``seed``."""
    return _mix(seed, stream)


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 finaliser chained over the values)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h >> 1


def table_size(n_params: int, requested: int = 0) -> int:
    """Entries of the shared noise table for ``n_params`` perturbed values: ``requested``
    when set (it must hold one window), else max(2^22, 4 * n_params)."""
    if requested and requested < n_params:
        raise ConfigError(
            f"es.table_size={requested} cannot hold one member's noise ({n_params} perturbed "
            f"values); set es.table_size >= {n_params}, or 0 for the default"
        )
    return requested or max(TABLE_MIN, 4 * n_params)


def noise_table(seed: int, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The shared table of ``size`` standard normals for ``seed`` (kept while it is in use:
    one table per process, the last one asked for)."""
    key = (seed, size, str(device), dtype)
    table = _table_cache.get(key)
    if table is None:
        _table_cache.clear()  # one run's table at a time: never two tables alive
        g = torch.Generator(device=device)
        g.manual_seed(_mix(seed, _TABLE_STREAM))
        table = _table_cache[key] = torch.randn(size, generator=g, device=device, dtype=dtype)
    return table


def drop_tables() -> None:
    """Forget the cached noise table, freeing its memory (the next table run redraws it)."""
    _table_cache.clear()


def lowrank_shape(p: Tensor) -> tuple[int, int]:
    """(out, in) of the matrix view of a >= 2-dim parameter."""
    return p.shape[0], math.prod(p.shape[1:])


class Noise:
    """The noise of one generation, produced block by block; only the last block is kept."""

    def __init__(self, params: Sequence[Tensor], pert: Perturbation) -> None:
        self.params, self.pert = list(params), pert
        self.lowrank = [pert.mode == "lowrank" and p.dim() >= 2 for p in params]
        self._cached: tuple[tuple[int, bool], list[Eps]] | None = None
        # table mode: parameter j's noise is entries starts[j]:starts[j+1] of a pair's window
        self._starts = [0, *itertools.accumulate(p.numel() for p in self.params)]
        self._table: Tensor | None = None
        self._rows: Tensor | None = None  # the table as (R, in) rows of the first weight
        if pert.mode == "table" and self.params:
            p0, n = self.params[0], self._starts[-1]
            self._table = noise_table(pert.seed, table_size(n, pert.table), p0.device, p0.dtype)
            width = lowrank_shape(p0)[1] if p0.dim() >= 2 else 1
            rows = self._table.numel() // width
            self._row_span = (self._table.numel() - n) // width + 1  # first rows a window fits
            self._stride = _stride(self._row_span, _mix(pert.seed, pert.generation, _TABLE_STREAM))
            self._width = width
            # x T^T over every row costs R / n_out pair products: worth it once the pairs of
            # the generation would cost more
            if p0.dim() >= 2 and pert.population // 2 * p0.shape[0] >= rows:
                self._rows = self._table[: rows * width].view(rows, width)

    def _block(self, b: int, first: bool = True) -> list[Eps]:
        """Pair noise of block ``b``: one entry per parameter, leading axis PAIRS_PER_BLOCK
        (``first=False``: the first parameter's entry left empty, (PAIRS_PER_BLOCK, 0), for
        a table chunk whose layer reads it as rows)."""
        key = (b, first or self._table is None)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        out = self._table_block(b, first) if self._table is not None else self._drawn_block(b)
        self._cached = (key, out)
        return out

    def _drawn_block(self, b: int) -> list[Eps]:
        """Block ``b`` drawn afresh: one generator per (block, parameter)."""
        pert, k = self.pert, PAIRS_PER_BLOCK
        out: list[Eps] = []
        for j, (p, low) in enumerate(zip(self.params, self.lowrank)):
            g = torch.Generator(device=p.device)
            g.manual_seed(_mix(pert.seed, pert.generation, b, j))

            def randn(*shape: int, g: torch.Generator = g, p: Tensor = p) -> Tensor:
                return torch.randn(shape, generator=g, device=p.device, dtype=p.dtype)

            if low:
                n_out, n_in = lowrank_shape(p)
                a = randn(k, n_out, pert.rank) / math.sqrt(pert.rank)
                out.append((a, randn(k, n_in, pert.rank)))
            else:
                out.append(randn(k, *p.shape))
        return out

    def _table_block(self, b: int, first: bool = True) -> list[Eps]:
        """Block ``b`` read from the table: each pair's window starts at its own offset."""
        assert self._table is not None
        table, starts = self._table, self._starts
        offsets = [r * self._width for r in self._first_rows(b)]
        out: list[Eps] = []
        for j, p in enumerate(self.params):
            if j == 0 and not first:
                out.append(table.new_empty(PAIRS_PER_BLOCK, 0))
                continue
            parts = [table[o + starts[j] : o + starts[j + 1]] for o in offsets]
            out.append(torch.stack(parts).view(PAIRS_PER_BLOCK, *p.shape))
        return out

    def _first_rows(self, b: int) -> list[int]:
        """The first table row of each pair of block ``b``: ``(start + k * step) mod span``,
        the start drawn per generation (:func:`_stride`), so no two pairs of a generation
        share an offset until there are more pairs than rows."""
        start, step = self._stride
        k0 = b * PAIRS_PER_BLOCK
        return [(start + k * step) % self._row_span for k in range(k0, k0 + PAIRS_PER_BLOCK)]

    def pairs(self, k0: int, k1: int, first: bool = True) -> list[Eps]:
        """Noise of pairs ``k0 .. k1-1`` (leading axis ``k1 - k0``; ``first=False``: see
        :meth:`_block`)."""
        parts = []
        for b in range(k0 // PAIRS_PER_BLOCK, (k1 - 1) // PAIRS_PER_BLOCK + 1):
            lo = max(k0 - b * PAIRS_PER_BLOCK, 0)
            hi = min(k1 - b * PAIRS_PER_BLOCK, PAIRS_PER_BLOCK)
            parts.append([_slice(e, lo, hi) for e in self._block(b, first)])
        return [_cat([part[j] for part in parts]) for j in range(len(self.params))]

    def members(self, m0: int, m1: int) -> ChunkNoise:
        """Signed noise of members ``m0 .. m1-1``, ready for a batched forward pass."""
        k0, k1 = m0 // 2, (m1 + 1) // 2
        lo, hi = m0 - 2 * k0, m1 - 2 * k0
        eps: list[Eps | None] = []
        aligned = lo == 0 and hi % 2 == 0  # whole pairs: full noise can stay per pair
        # the first weight's windows as table rows: copied out only if a layer asks for them
        by_rows = self._rows is not None and aligned
        pairs: list[Eps | None] = []
        for j, e in enumerate(self.pairs(k0, k1, first=not by_rows)):
            if by_rows and j == 0:
                eps.append(None)
                pairs.append(None)
            elif isinstance(e, tuple):  # the sign goes on A only: (-A) B^T = -(A B^T)
                a, b = e
                eps.append((_signed(a)[lo:hi], b.repeat_interleave(2, 0)[lo:hi]))
                pairs.append(None)
            elif aligned:  # signed lazily: the shared-input layer never needs the copy
                eps.append(None)
                pairs.append(e)
            else:
                eps.append(_signed(e)[lo:hi])
                pairs.append(None)
        rows = None
        if by_rows:
            assert self._rows is not None
            first = [r for b in range(k0 // PAIRS_PER_BLOCK, (k1 - 1) // PAIRS_PER_BLOCK + 1)
                     for r in self._first_rows(b)]  # fmt: skip
            skip = k0 % PAIRS_PER_BLOCK
            rows = (self._rows, tuple(first[skip : skip + k1 - k0]))
        return ChunkNoise(self.params, eps, self.pert.sigma, size=m1 - m0, pairs=pairs, rows=rows)


class ChunkNoise:
    """Member noise of one chunk, looked up by parameter: what the batched layers read.

    ``node`` holds current noise (node perturbation) by ``id`` of the LIF population it
    drives: (c, B, N) held over the sequence or (c, T, B, N) per step, already scaled.
    ``pairs`` holds, for a chunk of whole antithetic pairs, a full-rank parameter's noise per
    pair (c/2, *p.shape); its member noise (``eps`` None there) is signed only when asked for.
    ``taps`` holds, by the same ``id``, what records the members' whole current there
    (node perturbation's activity credit). ``kernels`` holds per-sample parameter noise by
    ``id`` of a parameter: (c, B, *p.shape), already scaled and signed -- sample ``b`` of
    member ``i`` runs with ``p + kernels[id(p)][i, b]``.
    """

    def __init__(
        self,
        params: list[Tensor],
        eps: list[Eps | None],
        sigma: float,
        node: dict[int, Tensor] | None = None,
        size: int = 0,
        pairs: list[Eps | None] | None = None,
        taps: dict[int, Callable[[Tensor], None]] | None = None,
        rows: tuple[Tensor, tuple[int, ...]] | None = None,
        kernels: dict[int, Tensor] | None = None,
    ) -> None:
        self.sigma = sigma
        self.kernels = kernels or {}
        self._rows = rows  # table mode: (table rows (R, in), each pair's first row), for
        # the first parameter, whose pair noise is then copied out only when asked for
        self.taps = taps or {}  # by id of a LIF population: what records its members' current
        self.size = size or (_len(eps[0]) if eps and eps[0] is not None else 0)
        self._index = {id(p): j for j, p in enumerate(params)}
        self._params, self._eps = params, eps
        self._pairs = pairs or [None] * len(eps)
        self.node = node or {}

    def pair(self, p: Tensor) -> Tensor | None:
        """Full-rank noise of ``p`` per antithetic pair (c/2, *p.shape): member ``2k`` adds
        ``+sigma e_k``, ``2k+1`` adds ``-sigma e_k``; None when ``p`` has none or the chunk
        does not hold whole pairs."""
        j = self._index.get(id(p))
        if j == 0 and self._rows is not None and self._pairs[0] is None:
            table, first = self._rows
            n = p.shape[0]
            self._pairs[0] = torch.stack([table[r : r + n] for r in first]).view(-1, *p.shape)
        e = None if j is None else self._pairs[j]
        return e if isinstance(e, Tensor) else None

    def rows(self, p: Tensor) -> tuple[Tensor, tuple[int, ...]] | None:
        """For the first perturbed weight in table mode: the table as rows (R, in) and each
        pair's first row, pair ``k``'s noise being rows ``first[k] : first[k] + out``; None
        otherwise (or when a per-pair product is cheaper)."""
        return self._rows if self._index.get(id(p)) == 0 else None

    def current(self, neuron: object, cur: Tensor, whole: bool = True) -> Tensor:
        """``cur`` (c, B, N) static or (c, T, B, N) plus the chunk's noise on ``neuron``'s
        current (``cur`` itself when it has none). ``whole``: the result is the neuron's whole
        current, handed to its tap (recorded activity) if it has one; a layer that adds more
        afterwards (recurrence) passes False and calls :meth:`seen` with the total."""
        xi = self.node.get(id(neuron))
        if xi is None:
            return cur
        if xi.dim() == cur.dim():  # held noise on a static current, or step noise on a stepped
            out = cur + xi
        elif xi.dim() > cur.dim():  # step noise: a static current now changes every step
            out = cur.unsqueeze(1) + xi
        else:
            out = cur + xi.unsqueeze(1)  # held noise, the same at every step
        if whole:
            self.seen(neuron, out)
        return out

    def seen(self, neuron: object, cur: Tensor) -> None:
        """Hand the members' whole noised current of ``neuron`` to its tap, if it has one."""
        tap = self.taps.get(id(neuron))
        if tap is not None:
            tap(cur)

    def __getitem__(self, p: Tensor | None) -> Eps | None:
        """The noise of parameter ``p`` (None when ``p`` is not perturbed or is None)."""
        j = self._index.get(id(p)) if p is not None else None
        if j is None:
            return None
        e = self._eps[j]
        if e is None:  # whole pairs, signed on first use
            e = self._eps[j] = _signed(self.pair(p))  # type: ignore[arg-type]
        return e

    def weights(self, p: Tensor) -> Tensor:
        """Member values ``p + sigma * eps`` (c, *p.shape); ``p`` broadcast if not perturbed."""
        e = self[p]
        if e is None:
            return p.unsqueeze(0).expand(max(self.size, 1), *p.shape)
        if isinstance(e, tuple):
            a, b = e
            e = (a @ b.transpose(1, 2)).view(-1, *p.shape)
        return p + self.sigma * e


class Offsets:
    """A population given by explicit offsets ``theta_m = theta + delta_m``, one (P, *p.shape)
    tensor per perturbed parameter: for strategies whose search distribution is not
    isotropic (CMA-ES, Guided ES, per-parameter sigma), evaluated on the same batched path.
    Holds the whole population, so it suits small parameter counts."""

    def __init__(self, params: Sequence[Tensor], deltas: Sequence[Tensor]) -> None:
        self.params, self.deltas = list(params), list(deltas)
        if len(self.params) != len(self.deltas) or not self.deltas:
            raise ValueError(
                f"need one offset per parameter: {len(self.params)} parameters, "
                f"{len(self.deltas)} offsets"
            )
        self.population = self.deltas[0].shape[0]
        for p, d in zip(self.params, self.deltas):
            if d.shape != (self.population, *p.shape):
                raise ValueError(
                    f"offset shape {tuple(d.shape)} does not match "
                    f"({self.population}, *{tuple(p.shape)})"
                )

    def members(self, m0: int, m1: int) -> ChunkNoise:
        """Offsets of members ``m0 .. m1-1`` (sigma 1: the offsets are the full change)."""
        return ChunkNoise(self.params, [d[m0:m1] for d in self.deltas], 1.0)


def _stride(span: int, seed: int) -> tuple[int, int]:
    """A start in ``[0, span)`` drawn from ``seed``, and the step nearest ``span`` times the
    golden ratio's conjugate that is coprime to ``span``: the offsets ``start + k * step``
    are distinct and spread evenly over the span for every number of pairs (a Weyl
    sequence), where a random step could bunch them and random offsets would repeat some."""
    g = torch.Generator()
    g.manual_seed(seed)
    start = int(torch.randint(0, max(span, 1), (1,), generator=g))
    step = max(1, round(span * 0.6180339887498949))
    while math.gcd(step, span) != 1:
        step += 1
    return start, step


def _signed(e: Tensor) -> Tensor:
    """Pairs (K, ...) -> members (2K, ...): +e, -e, +e, -e ..."""
    return torch.stack((e, -e), 1).flatten(0, 1)


def _slice(e: Eps, lo: int, hi: int) -> Eps:
    return (e[0][lo:hi], e[1][lo:hi]) if isinstance(e, tuple) else e[lo:hi]


def _cat(parts: list[Eps]) -> Eps:
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tuple):
        return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))  # type: ignore[index]
    return torch.cat(parts)  # type: ignore[arg-type]


def _len(e: Eps) -> int:
    return e[0].shape[0] if isinstance(e, tuple) else e.shape[0]


def estimate(params: Sequence[Tensor], pert: Perturbation, weights: Tensor) -> list[Tensor]:
    """The search-gradient ``1/(P sigma) sum_m w_m s_m eps_m``, one tensor per parameter.

    ``weights`` (P,) are shaped fitnesses (higher is better), so the result points uphill in
    fitness. The noise is regenerated block by block: nothing population-sized is kept.
    Antithetic pairs enter as ``(w_2k - w_2k+1) eps_k``.
    """
    if weights.shape != (pert.population,):
        raise ValueError(f"weights must be ({pert.population},), got {tuple(weights.shape)}")
    noise = Noise(params, pert)
    grads = [torch.zeros_like(p) for p in params]
    for k0 in range(0, pert.population // 2, PAIRS_PER_BLOCK):
        k1 = min(k0 + PAIRS_PER_BLOCK, pert.population // 2)
        w = weights[2 * k0 : 2 * k1]
        diff = w[0::2] - w[1::2]  # (K,)
        for g, p, e in zip(grads, params, noise.pairs(k0, k1)):
            d = diff.to(p.device, p.dtype)
            if isinstance(e, tuple):
                a, b = e  # sum_k d_k A_k B_k^T as one matmul: (out, K r) @ (K r, in)
                da = (a * d[:, None, None]).permute(1, 0, 2).flatten(1)
                g += (da @ b.transpose(1, 2).flatten(0, 1)).view_as(p)
            else:
                g += torch.tensordot(d, e, dims=1)
    scale = 1.0 / (pert.population * pert.sigma)
    return [g.mul_(scale) for g in grads]


def materialize(model: nn.Module, pert: Perturbation, member: int) -> dict[str, Tensor]:
    """One member's perturbed parameters by name (for checks and debugging: P-fold memory)."""
    named = perturbed(model)
    chunk = Noise([p for _, p in named], pert).members(member, member + 1)
    return {n: chunk.weights(p)[0] for n, p in named}
