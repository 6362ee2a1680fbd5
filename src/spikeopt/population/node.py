"""Node perturbation noise: members perturb the synaptic *currents* of chosen layers.

Member ``m`` (pair ``k = m // 2``, sign ``s_m = +1, -1``) of generation ``g`` runs the shared
weights with ``sigma_l * s_m * xi_{k,l}`` added to the current of node layer ``l``, where
``xi_{k,l} ~ N(0, 1)`` has one member's current shape: (B, N_l) held over the sequence, or
(T, B, N_l) drawn per step. Every sample of the batch gets its own draw, so each sample's loss
difference credits its own noise (per-sample credit). A conv layer listed in ``kernels`` takes
per-sample *parameter* noise instead: ``xi_{k,l}`` is (B, D_l), D_l the number of the layer's
parameters (:func:`layer_params`: kernel, bias, batch norm affine), and sample ``b`` of member
``m`` runs the layer with the parameters ``theta_l + s_m sigma_l * xi_{k,l,b}`` (one sigma per
parameter tensor) -- weight perturbation, but credited sample by sample like node noise (a conv
kernel has far fewer weights than its current has values). The other perturbed parameters
(conv kernels when they take ES weight noise, learnable tau/threshold) get ordinary ES weight
noise (``weights``) in the same members.

Like weight noise, node noise is regenerated from integers: the draws of a pair come from
:class:`~spikeopt.population.noise.Noise` over virtual tensors shaped like one member's current,
in blocks seeded by ``(seed, generation, block, layer)``, so chunking changes nothing and the
estimator regenerates exactly what the members ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from spikeopt.config import ConfigError
from spikeopt.population.noise import ChunkNoise, Noise, Perturbation, stream_seed

NODE_STREAM = 0x6E6F6465  # the node noise of a run is a stream apart from its weight noise


@dataclass(frozen=True)
class NodePerturbation:
    """One generation's node population: seeds, the noised layers and their scales."""

    population: int
    layers: tuple[int, ...]  # indices into the SNN's ``layers`` whose currents are noised
    sigmas: tuple[float, ...]  # noise std per node layer, in current units
    shapes: tuple[tuple[int, ...], ...]  # one member's noise per layer: (B, N) or (T, B, N)
    seed: int
    generation: int
    weights: Perturbation | None = None  # weight noise of ``weight_params``, same members
    weight_params: tuple[int, ...] = ()  # indices into ``perturbed(model)``
    assign: tuple[int, ...] = ()  # per pair, the one node layer (position in ``layers``) it
    # perturbs; () = every pair perturbs every node layer at once
    recorded: tuple[int, ...] | None = None  # positions in ``layers`` whose currents
    # record() records (activity credit); None = every node layer
    grids: tuple[tuple[int, ...], ...] = ()  # per node layer, () or a conv current's
    # (C, H, W, bh, bw): one draw per channel and bh x bw block of positions; () = per value
    kernels: tuple[int, ...] = ()  # positions in ``layers`` (conv) whose noise is per-sample
    # parameter noise, shape (B, D), instead of current noise; their ``sigmas`` entry is 1
    kernel_sigmas: tuple[tuple[float, ...], ...] = ()  # per position in ``kernels``, one
    # sigma per tensor of layer_params(layer), in that tensor's units

    def __post_init__(self) -> None:
        if self.population < 2 or self.population % 2:
            raise ConfigError(
                f"es.population must be even and >= 2 (antithetic pairs), got {self.population}"
            )
        if not (len(self.layers) == len(self.sigmas) == len(self.shapes)):
            raise ValueError("one sigma and one shape per node layer")
        if self.assign and len(self.assign) != self.population // 2:
            raise ValueError("assign gives one node layer per antithetic pair")
        if self.recorded is not None and not set(self.recorded) <= set(range(len(self.layers))):
            raise ValueError("recorded names positions in layers")
        if self.grids and len(self.grids) != len(self.layers):
            raise ValueError("one grid (or ()) per node layer")
        if not set(self.kernels) <= set(range(len(self.layers))):
            raise ValueError("kernels names positions in layers")
        if set(self.kernels) & set(self.recorded or ()):
            raise ValueError("per-sample kernel noise is credited from the noise, not recorded")
        if len(self.kernel_sigmas) != len(self.kernels):
            raise ValueError("one tuple of sigmas per per-sample kernel layer")

    def recording(self) -> tuple[int, ...]:
        """Positions in ``layers`` whose currents are recorded when activity is asked for (never
        a per-sample kernel layer: its noise is not a current)."""
        if self.recorded is not None:
            return self.recorded
        return tuple(j for j in range(len(self.layers)) if j not in self.kernels)


def layer_params(layer: nn.Module) -> list[Tensor]:
    """A conv LIF layer's parameters that per-sample parameter noise perturbs, in order: the
    kernel, its bias, the batch norm weight and bias (those it has and that learn)."""
    mods = [layer.conv, getattr(layer, "bn", None)]
    ps = [getattr(m, n, None) for m in mods if m is not None for n in ("weight", "bias")]
    return [p for p in ps if isinstance(p, Tensor) and p.requires_grad]


def coarse(grid: tuple[int, ...]) -> int:
    """Draws per sample of a blocked conv current (C, H, W, bh, bw): one per channel and block
    (the edge blocks may be partial)."""
    c, h, w, bh, bw = grid
    return c * -(-h // bh) * -(-w // bw)


def expand_blocks(e: Tensor, grid: tuple[int, ...]) -> Tensor:
    """Block draws (..., C * ceil(H/bh) * ceil(W/bw)) spread over the positions they cover:
    (..., C * H * W), every position of a block holding its block's draw."""
    c, h, w, bh, bw = grid
    lead = e.shape[:-1]
    x = e.reshape(*lead, c, -(-h // bh), -(-w // bw))
    x = x.repeat_interleave(bh, -2)[..., :h, :].repeat_interleave(bw, -1)[..., :w]
    return x.reshape(*lead, c * h * w)


def block_sizes(grid: tuple[int, ...]) -> Tensor:
    """How many positions share each position's draw, (C * H * W,): bh * bw inside, fewer
    in partial edge blocks."""
    c, h, w, bh, bw = grid
    rows = torch.tensor([min(bh, h - i // bh * bh) for i in range(h)], dtype=torch.float64)
    cols = torch.tensor([min(bw, w - j // bw * bw) for j in range(w)], dtype=torch.float64)
    return (rows[:, None] * cols[None, :]).expand(c, h, w).reshape(-1)


def split_pairs(pairs: int, dims: Sequence[int]) -> tuple[int, ...]:
    """Each of ``pairs`` pairs assigned one layer, in proportion to sqrt(dim) of the layers
    (what minimises the summed variance of their estimates, each ~ dim / pairs), interleaved
    so every chunk of members mixes the layers; every layer gets at least one pair."""
    if pairs < len(dims):
        raise ConfigError(
            f"nodepert.split=layer needs at least one antithetic pair per node layer: "
            f"{len(dims)} layers, es.population={2 * pairs}"
        )
    weights = [d**0.5 for d in dims]
    total = sum(weights)
    share = [1 + (pairs - len(dims)) * w / total for w in weights]  # one each, then sqrt(dim)
    counts = [0] * len(dims)
    out = []
    for k in range(pairs):  # stride scheduling: the layer furthest behind its share goes next
        j = max(range(len(dims)), key=lambda i: share[i] * (k + 1) / pairs - counts[i])
        counts[j] += 1
        out.append(j)
    return tuple(out)


class NodeNoise:
    """Hands out chunks of a :class:`NodePerturbation`'s members for the batched layers."""

    def __init__(self, model: nn.Module, params: Sequence[Tensor], spec: NodePerturbation) -> None:
        self.spec, self.population = spec, spec.population
        layers = getattr(model, "layers", None)
        if layers is None:
            raise ConfigError("node perturbation needs a model built from spikeopt layers (SNN)")
        self.targets = [layers[i].neuron for i in spec.layers]  # what node noise is keyed by
        # per-sample parameter noise: each kernel layer's tensors, and each entry's sigma
        self.kernel_params: dict[int, list[Tensor]] = {}
        self.scales: dict[int, Tensor] = {}
        for j, sigmas in zip(spec.kernels, spec.kernel_sigmas):
            ps = layer_params(layers[spec.layers[j]])
            self.kernel_params[j] = ps
            self.scales[j] = torch.cat([torch.full((p.numel(),), s) for p, s in zip(ps, sigmas)])
        like = next(iter(params), None)
        device = like.device if like is not None else torch.device("cpu")
        dtype = like.dtype if like is not None else torch.float32
        # a blocked layer draws only its blocks' values (what pairs() then spreads out)
        self.grids = spec.grids or ((),) * len(spec.shapes)
        drawn = [(*s[:-1], coarse(g)) if g else s for s, g in zip(spec.shapes, self.grids)]
        virtual = [torch.empty(shape, device=device, dtype=dtype) for shape in drawn]
        unit = Perturbation(spec.population, 1.0, 1, "full", stream_seed(spec.seed, NODE_STREAM),
                            spec.generation)  # fmt: skip
        self.node = Noise(virtual, unit)
        self.wparams = [params[j] for j in spec.weight_params]
        self.weights = Noise(self.wparams, spec.weights) if spec.weights is not None else None
        self.activity: dict[int, Tensor] = {}  # by position in spec.layers, once recording

    def record(self) -> list[Tensor]:
        """From now on, sum each pair's half difference of its members' whole current at every
        recorded node layer (``spec.recorded``, in order), ``(I_{2k} - I_{2k+1}) / 2``, into the
        returned tensors (K, *shape): the current change the pair measured there -- its own
        noise plus what the noise of the layers before it did to the layer's input (activity
        credit)."""
        pairs = self.population // 2
        new = self.node.params[0].new_zeros
        self.activity = {j: new(pairs, *self.spec.shapes[j]) for j in self.spec.recording()}
        return list(self.activity.values())

    def pairs(self, k0: int, k1: int) -> list[Tensor]:
        """Unit current noise of pairs ``k0 .. k1-1``, one (K, *shape) tensor per node layer."""
        drawn = [e for e in self.node.pairs(k0, k1) if isinstance(e, Tensor)]
        return [expand_blocks(e, g) if g else e for e, g in zip(drawn, self.grids)]

    def members(self, m0: int, m1: int) -> ChunkNoise:
        """Members ``m0 .. m1-1``: scaled, signed current noise plus any weight noise."""
        k0 = m0 // 2
        pairs = self.pairs(k0, (m1 + 1) // 2)
        node, kernels = {}, {}
        for j, (target, sigma, e) in enumerate(zip(self.targets, self.spec.sigmas, pairs)):
            scale = self.scales.get(j)  # per-sample parameter noise: every entry its own sigma
            factor: float | Tensor = sigma if scale is None else scale.to(e)
            if self.spec.assign:  # only the pairs assigned to this layer perturb it
                own = [a == j for a in self.spec.assign[k0 : k0 + e.shape[0]]]
                mask = torch.tensor(own, dtype=e.dtype, device=e.device)
                e = e * mask.view(-1, *[1] * (e.dim() - 1))
            # +sigma e, -sigma e written straight into the members' slots: one pass, no copies
            signed = e.new_empty(2 * e.shape[0], *e.shape[1:])
            torch.mul(e, factor, out=signed[0::2])
            torch.mul(e, -factor, out=signed[1::2])
            signed = signed[m0 - 2 * k0 : m1 - 2 * k0]
            if scale is not None:  # (c, B, D) -> each sample's change of each tensor
                parts = signed.split([p.numel() for p in self.kernel_params[j]], -1)
                for p, part in zip(self.kernel_params[j], parts):
                    kernels[id(p)] = part.reshape(*part.shape[:2], *p.shape)
            else:
                node[id(target)] = signed
        taps = {id(self.targets[j]): self._tap(a, m0, m1) for j, a in self.activity.items()}
        if self.weights is None:
            return ChunkNoise([], [], 1.0, node, size=m1 - m0, taps=taps, kernels=kernels)
        w = self.weights.members(m0, m1)
        return ChunkNoise(self.wparams, w._eps, w.sigma, node, w.size, w._pairs, taps,
                          kernels=kernels)  # fmt: skip

    @staticmethod
    def _tap(into: Tensor, m0: int, m1: int) -> Callable[[Tensor], None]:
        """What adds members ``m0 .. m1-1``'s current (c, B, N) or (c, T, B, N) into the pair
        sums ``into`` (K, B, N) held (the time mean) or (K, T, B, N) per step."""
        members = torch.arange(m0, m1, device=into.device)
        half = 0.5 - (members % 2).to(into.dtype)  # +1/2 for member 2k, -1/2 for 2k+1

        def tap(cur: Tensor) -> None:
            if into.dim() == 3 and cur.dim() == 4:  # held: the current's mean over time
                cur = cur.mean(1)
            into.index_add_(0, members // 2, cur * half.view(-1, *[1] * (cur.dim() - 1)))

        return tap
