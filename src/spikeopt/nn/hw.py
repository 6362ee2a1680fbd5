"""Hardware-aware sign constraints: sign annealing, Dale's law and the sign-topology metric.

Both constraints are ``torch.nn.utils.parametrize`` parametrisations of the ``weight`` of every
``nn.Linear`` / ``nn.Conv2d`` (registered before any quantiser, so a chip's weights are
``q(sign-constrained w)``). A weight is read as a matrix ``(out, fan_in)`` (a conv kernel's
``in * kh * kw`` entries flattened); a **row block** is ``hw.sign_block`` consecutive entries of
one row (one postsynaptic neuron's inputs; 0 = the whole row), the last block of a row shorter
when the block does not divide ``fan_in``.

Sign annealing (``hw.sign_anneal``; the predecessor's ``nwave.*``)::

    w[r, j] = |v[r, j]| * tanh(alpha * u[r, b(j)])      b(j) = j // sign_block
    alpha(e) = a0 * (a1 / a0) ** min(e / (E - 1), 1)    e = epoch, E = hw.sign_total_epochs

with ``v`` the per-weight magnitude parameter (``parametrizations.weight.original0``), ``u`` one
sign parameter per row block (``original1``), ``a0 = hw.sign_alpha_start``,
``a1 = hw.sign_alpha_end``. Every weight of a block carries the sign of its block's ``u``, so the
blocks are sign-coherent by construction; annealing makes the block factor hard: at small alpha
``tanh`` is a soft gain whose sign gradient descent (or a search) flips easily, at large alpha it
is ``+-1`` (``tanh(50 * 0.1) = 0.9999``), so the network that finishes runs ``w = +-|v|``: one
sign bit per block and a magnitude per weight. At registration ``v = w / tanh(a0)`` and
``u = sign(sum of the block)`` (+1 for an all-zero block), so the initial weights keep their
magnitudes and each block takes its majority sign.

Dale's law (``hw.dale``)::

    w[:, i] = d[i] * |v[:, i]|        d[i] = sign of column i's sum at registration (+1 for 0)

a fixed buffer ``d``: every presynaptic neuron (input channel of a conv) keeps one sign on all
its outgoing weights for the whole run, whatever the optimiser or the search does to ``v``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from spikeopt.config import ConfigError, HWConfig
from spikeopt.functional.weights import (
    blocks,
    coherence,
    effective,
    incoherence,
    magnitude_excess,
    topology,
    weight_layers,
)

__all__ = ["Dale", "SignAnneal", "blocks", "coherence", "constrain_model", "effective",
           "incoherence", "magnitude_excess", "sign_topology", "topology", "topology_loss",
           "weight_layers", "weight_magnitude_loss"]  # fmt: skip


def _spread(u: Tensor, shape: torch.Size, block: int, lead: int) -> Tensor:
    """Block values ``u`` (*lead, out, n_blocks) repeated over each block, shaped like a
    weight of ``shape`` (*lead, *weight)."""
    fan = math.prod(shape[lead + 1 :])
    size = block if 0 < block < fan else fan
    full = u.repeat_interleave(size, dim=-1)[..., :fan]
    return full.reshape(shape)


class SignAnneal(nn.Module):
    """``w = |v| * tanh(alpha * u_block)``; ``alpha`` is a buffer the loop anneals."""

    alpha: Tensor

    def __init__(self, block: int, alpha: float) -> None:
        super().__init__()
        self.block = block
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def forward(self, v: Tensor, u: Tensor) -> Tensor:
        """The sign-constrained weight."""
        return self.members(v, u, lead=0)

    def members(self, v: Tensor, u: Tensor, lead: int) -> Tensor:
        """The weights of ``lead``-batched originals (every member's own)."""
        sign = torch.tanh(self.alpha.to(u.dtype) * u)
        return v.abs() * _spread(sign, v.shape, self.block, lead)

    def right_inverse(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(v, u)`` whose weight has ``w``'s magnitudes and each block's majority sign."""
        u = torch.where(blocks(w, self.block).sum(-1) < 0, -1.0, 1.0).to(w.dtype)
        return w / math.tanh(float(self.alpha)), u

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"block={self.block}, alpha={float(self.alpha):.3g}"


class Dale(nn.Module):
    """``w[:, i] = d[i] * |v[:, i]|`` with a fixed sign ``d`` per presynaptic neuron."""

    sign: Tensor

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        col = w.sum(dim=[d for d in range(w.dim()) if d != 1])
        self.register_buffer("sign", torch.where(col < 0, -1.0, 1.0).to(w.dtype))

    def forward(self, v: Tensor) -> Tensor:
        """The weight with every column on its fixed sign."""
        return self.members(v, lead=0)

    def members(self, v: Tensor, lead: int) -> Tensor:
        """The weights of ``lead``-batched originals."""
        shape = [1] * v.dim()
        shape[lead + 1] = -1
        return v.abs() * self.sign.view(shape)

    def right_inverse(self, w: Tensor) -> Tensor:
        """The weight itself (its magnitudes are kept; its signs become the fixed ones)."""
        return w


def constrain_model(model: nn.Module, hw: HWConfig) -> nn.Module:
    """Register ``hw``'s sign constraints on every weight; ``model`` unchanged when off."""
    if hw.sign_anneal and hw.dale:
        raise ConfigError(
            "hw.sign_anneal and hw.dale together fix each weight's sign twice (its row block's "
            "and its presynaptic neuron's), which contradict; set one of them to false"
        )
    for _, m in weight_layers(model):
        if parametrize.is_parametrized(m, "weight"):
            continue  # already constrained (a rebuilt task reuses the model)
        if hw.sign_anneal:
            anneal = SignAnneal(hw.sign_block, hw.sign_alpha_start)
            parametrize.register_parametrization(m, "weight", anneal)
        elif hw.dale:
            parametrize.register_parametrization(m, "weight", Dale(effective(m).detach()))
    return model


def annealers(model: nn.Module) -> list[SignAnneal]:
    """Every :class:`SignAnneal` of ``model``."""
    return [m for m in model.modules() if isinstance(m, SignAnneal)]


def sign_alpha_at(epoch: int, hw: HWConfig, epochs: int) -> float:
    """``alpha`` of ``epoch``: geometric from ``sign_alpha_start`` to ``sign_alpha_end`` over
    ``hw.sign_total_epochs`` (0 = the run's epochs), then held at the end value."""
    total = hw.sign_total_epochs or epochs
    frac = min(epoch / (total - 1), 1.0) if total > 1 else 1.0
    return float(hw.sign_alpha_start * (hw.sign_alpha_end / hw.sign_alpha_start) ** frac)


def set_sign_alpha(model: nn.Module, alpha: float) -> None:
    """Set every annealer's ``alpha``."""
    for a in annealers(model):
        a.alpha.fill_(alpha)


def sign_topology(model: nn.Module, block: int) -> dict[str, float]:
    """``sign_topology/<layer>/<weight_id>_coherence_pct`` for every weight of ``model``."""
    out = {}
    for name, m in weight_layers(model):
        key = f"sign_topology/{name or 'model'}/weight_coherence_pct"
        out[key] = float(coherence(effective(m).detach(), block))
    return out


def weight_magnitude_loss(model: nn.Module, limit: float) -> Tensor:
    """Mean over every weight entry of ``relu(|w| - limit)^2`` (the weights the model runs)."""
    return magnitude_excess([effective(m) for _, m in weight_layers(model)], limit)


def topology_loss(model: nn.Module, lam: float, block: int = 0) -> Tensor:
    """``lam`` times the mean over weights of their sign incoherence within row blocks."""
    return lam * topology([effective(m) for _, m in weight_layers(model)], block)


def constrained(model: nn.Module) -> bool:
    """True when any weight of ``model`` is parametrised (quantised or sign-constrained)."""
    return any(parametrize.is_parametrized(m, "weight") for _, m in weight_layers(model))


def hw_metrics(model: nn.Module, hw: HWConfig, terms: Any) -> dict[str, float]:
    """The per-epoch ``sign_alpha`` and sign-topology rows, when a sign key is on."""
    if not (hw.sign_anneal or hw.dale or "topology" in terms):
        return {}
    row: dict[str, float] = {}
    alphas = annealers(model)
    if alphas:
        row["sign_alpha"] = float(alphas[0].alpha)
    row.update(sign_topology(model, hw.sign_block))
    return row
