"""What every batched layer of :mod:`spikeopt.population.layers` shares: the chunk's
:class:`Context` (its noise and the generation's cached tensors), per-member LIF constants and
the LIF dynamics of a chunk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from spikeopt.functional.neuron import LIFParams, beta_from_tau
from spikeopt.nn.layers import LIF, ConvLIF, LinearLIF, is_static
from spikeopt.population.lif import li_run, lif_run
from spikeopt.population.noise import ChunkNoise


@dataclass
class Context:
    """One chunk's noise, plus what every chunk of the generation shares (cached once)."""

    noise: ChunkNoise
    shared: dict[tuple[str, int], Tensor] = field(default_factory=dict)  # by (kind, id(module))

    def scratch(self, owner: object, like: Tensor) -> Callable[[str, tuple[int, ...]], Tensor]:
        """``out(name, shape)`` for ``owner``: a tensor reused by every chunk of the generation
        (valid until the next chunk runs)."""

        def out(name: str, shape: tuple[int, ...]) -> Tensor:
            key = (f"scratch-{name}", id(owner))
            buf = self.shared.get(key)
            if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
                buf = self.shared[key] = like.new_empty(shape)
            return buf[: shape[0]]

        return out


def neuron_params(neuron: LIF, ctx: Context) -> LIFParams:
    """LIF constants; learnable tau/threshold become per-member tensors (c, 1, N)."""
    p = neuron.params()
    if neuron.tau is not None:
        tau = ctx.noise.weights(neuron.tau).clamp(min=1e-2)
        p = p._replace(beta=beta_from_tau(tau, neuron.cfg.dt).unsqueeze(1))  # type: ignore[union-attr]
    if neuron.threshold is not None:
        p = p._replace(v_threshold=ctx.noise.weights(neuron.threshold).unsqueeze(1))
    return p


def neuron_layer(
    neuron: LIF, cur: Tensor, steps: int, ctx: Context, li: bool = False, keep_mems: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Spikes and membranes (c, T, B, N) for a current (c, B, N) (static) or (c, T, B, N);
    any node-perturbation noise on ``neuron`` is added to the current first."""
    cur = ctx.noise.current(neuron, cur)
    p = neuron_params(neuron, ctx)
    if li:
        v = li_run(cur, p, steps)
        return v, v
    return lif_run(cur, p, neuron.spike_fn, steps, keep_mems, ctx.scratch(neuron, cur))


def time_rows(h: Tensor, shared: bool) -> tuple[Tensor, bool, int]:
    """Synapse input in time-major row order and (static?, T).

    Shared (B, T, ...) -> (B, ...) when static, else (T, B, ...); member (c, T, B, ...) as is.
    """
    if not shared:
        return h, False, h.shape[1]
    if is_static(h):
        return h[:, 0], True, h.shape[1]
    return h.transpose(0, 1), False, h.shape[1]


def constant_lif(layer: LinearLIF | ConvLIF) -> bool:
    """True when the layer's tau and threshold are constants (not learnable, per member)."""
    return layer.neuron.tau is None and layer.neuron.threshold is None
