"""Quantisation-aware training: weights quantised in the forward pass (the ``hw.*`` keys).

Symmetric uniform quantisation to ``b`` bits, with ``q_max = 2^(b-1) - 1`` levels either side
of zero (b = 2: ternary {-s, 0, s}; b = 4: -7s .. 7s; b = 8: -127s .. 127s) and the scale from
the largest magnitude, per tensor or per output channel (a row of a dense weight, one output
channel's kernel of a conv)::

    s    = max |w| / q_max                        (per tensor, or per output channel)
    q(w) = s * round(w / s)                       on the grid {-q_max .. q_max} * s, no clipping

The trained parameters stay float (the optimizer's weights, ES's centre); the network always
runs ``q(w)``. Backward is the straight-through estimator (Bengio et al. 2013; Courbariaux et
al. 2015): ``w + (q(w) - w).detach()`` has the value ``q(w)`` and the gradient of ``w``, so BPTT
and the gradient half of hybrid / guided ES update the float weights by the gradient taken at
the quantised ones.

It is a ``torch.nn.utils.parametrize`` parametrisation of the ``weight`` of every ``nn.Linear``
and ``nn.Conv2d`` (biases, time constants, thresholds and batch-norm parameters stay float):
``fc.weight`` is ``q(fc.parametrizations.weight.original)``, and the original is the named
parameter. A population method therefore perturbs the float centre, and every member runs
``q(theta + sigma eps_m)``, quantised with its own scale: the vmap path
(:mod:`spikeopt.population.vmap`) swaps each member's float weights in and the parametrisation
quantises them; on the batched path of built-in SNNs (:mod:`spikeopt.population.quant`) every
perturbed quantised weight is formed for each member of the chunk and quantised there. Node
perturbation's members share the quantised centre weights and perturb currents only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from spikeopt.config import Config, ConfigError, HWConfig
from spikeopt.nn.hw import constrain_model, constrained

BITS = range(2, 9)  # hw.weight_bits / hw.layer_bits: what the quantiser accepts (0 = float)


def levels(bits: int) -> int:
    """``q_max``: the largest integer level of a symmetric ``bits``-bit grid."""
    if bits not in BITS:
        raise ConfigError(f"hw.weight_bits must be in 2..8, got {bits}")
    return 2 ** (bits - 1) - 1


def scale(w: Tensor, bits: int, per_channel: bool, lead: int = 0) -> Tensor:
    """The grid step ``max |w| / q_max``, shaped to broadcast against ``w``: one per tensor, or
    one per output channel (dim ``lead``); the first ``lead`` dims index separate tensors (a
    population's members, each with its own scale)."""
    dims = tuple(range(lead + (1 if per_channel and w.dim() - lead >= 2 else 0), w.dim()))
    amax = w.abs().amax(dim=dims, keepdim=True) if dims else w.abs()
    # an all-zero tensor (or channel) has nothing to scale: any step maps it to 0
    return amax.clamp(min=torch.finfo(w.dtype).tiny) / levels(bits)


def quantize(w: Tensor, bits: int, per_channel: bool = False, lead: int = 0) -> Tensor:
    """``w`` rounded onto its symmetric ``bits``-bit grid (the forward values, no STE); with
    ``lead`` leading dims, each tensor along them on its own grid."""
    s = scale(w, bits, per_channel, lead)
    q = levels(bits)
    return torch.round(w / s).clamp(-q, q) * s  # the clamp only guards rounding at +-q_max


class Quantizer(nn.Module):
    """The parametrisation: forward ``q(w)``, backward the identity (straight-through)."""

    def __init__(self, bits: int, per_channel: bool) -> None:
        super().__init__()
        levels(bits)  # refuse a width no grid has
        self.bits, self.per_channel = bits, per_channel

    def forward(self, w: Tensor) -> Tensor:
        """The quantised weight, with the float weight's gradient."""
        return w + (quantize(w, self.bits, self.per_channel) - w).detach()

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"bits={self.bits}, per_channel={self.per_channel}"


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose ``weight`` is quantised, in ``named_modules`` order: every
    ``nn.Linear`` and ``nn.Conv2d`` (a recurrent layer's input and recurrent weights are two)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def layer_bits(hw: HWConfig, n_layers: int) -> list[int]:
    """Bits per weight layer (0 = float) from ``hw.weight_bits`` and ``hw.layer_bits``."""
    if not hw.layer_bits:
        return [hw.weight_bits or 0] * n_layers
    if len(hw.layer_bits) != n_layers:
        raise ConfigError(
            f"hw.layer_bits has {len(hw.layer_bits)} entries but the model has {n_layers} "
            f"weight layers; give one per layer in model order (0 = float), or [] to use "
            f"hw.weight_bits for all"
        )
    for b in hw.layer_bits:
        if b != 0:
            levels(b)
    return list(hw.layer_bits)


def quantize_model(model: nn.Module, hw: HWConfig) -> nn.Module:
    """Register the :class:`Quantizer` on the weights ``hw`` asks for; ``model`` itself,
    unchanged when everything stays float. Call it after any weight initialisation."""
    if hw.weight_bits is not None:
        levels(hw.weight_bits)
    layers = weight_layers(model)
    for (_, module), bits in zip(layers, layer_bits(hw, len(layers))):
        if bits and not any(isinstance(p, Quantizer) for p in _chain(module)):
            parametrize.register_parametrization(module, "weight", Quantizer(bits, hw.per_channel))
    return model


def _chain(module: nn.Module) -> list[nn.Module]:
    """The parametrisations of ``module.weight`` ([] when it has none)."""
    if not parametrize.is_parametrized(module, "weight"):
        return []
    return list(module.parametrizations["weight"])  # type: ignore[index, arg-type]


def apply_hw(model: nn.Module, cfg: Config) -> nn.Module:
    """``model`` with the ``hw.*`` sign constraints and quantisation of ``cfg`` (what every
    task calls once its model is initialised); refuses what cannot run it."""
    constrain_model(model, cfg.hw)  # first: the quantiser rounds the sign-constrained weight
    quantize_model(model, cfg.hw)
    if constrained(model) and cfg.es.workers != 0:
        hw = cfg.hw
        keys = {"hw.weight_bits": hw.weight_bits or hw.layer_bits, "hw.sign_anneal": hw.sign_anneal}
        on = [k for k, v in {**keys, "hw.dale": hw.dale}.items() if v]
        raise ConfigError(
            f"{' and '.join(on)} with es.workers={cfg.es.workers}: a parametrised model "
            "cannot be shipped to Ray actors (torch pickles it only as a state_dict); "
            "set es.workers=0"
        )
    return model


class Quantised(NamedTuple):
    """One quantised weight: its module, its quantiser and the float original it rounds."""

    module: nn.Module
    quantizer: Quantizer
    original: nn.Parameter


def quantizers(model: nn.Module) -> list[Quantised]:
    """Every quantised weight of ``model``, in ``modules()`` order."""
    out = []
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            plist: Any = m.parametrizations["weight"]  # type: ignore[index]
            for p in plist:
                if isinstance(p, Quantizer) and hasattr(plist, "original"):
                    out.append(Quantised(m, p, plist.original))
    return out


def quantised(model: nn.Module) -> bool:
    """True when any weight of ``model`` is quantised in its forward pass."""
    return bool(quantizers(model))
