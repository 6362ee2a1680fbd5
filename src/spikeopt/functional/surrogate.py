"""Surrogate spike functions: a hard threshold forward, a smooth derivative backward.

Each surrogate is the derivative of a smooth step ``S(x)`` that goes from 0 to 1 around
``x = 0`` (``x = v - v_threshold``), so its derivative integrates to 1 and ``alpha`` only sets
how sharp the step is. The forward pass is always ``H(x) = 1[x >= 0]``. ``smooth`` is kept so
tests can check ``derivative`` against autograd of the smooth form.

Names at the edges, callables inside: configs say ``neuron.surrogate: arctan`` and
:func:`get_surrogate` turns that into a :class:`Surrogate`, which is what layers call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from spikeopt.config import choose


class _SpikeFn(torch.autograd.Function):
    """Heaviside forward; ``surrogate.derivative`` backward.

    In the ``setup_context`` form with a generated vmap rule, so spiking modules also run
    under ``torch.func`` transforms (the population's ``vmap`` fallback)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, surrogate: Surrogate) -> Tensor:  # type: ignore[override]
        return (x >= 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, Surrogate], output: Tensor) -> None:  # type: ignore[override]
        x, surrogate = inputs
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate spike function with sharpness ``alpha``; call it on ``v - threshold``."""

    name: str
    alpha: float

    def __call__(self, x: Tensor) -> Tensor:
        """Spikes ``1[x >= 0]`` whose gradient is :meth:`derivative`."""
        return _SpikeFn.apply(x, self)

    def derivative(self, x: Tensor) -> Tensor:
        """The surrogate derivative dS/dx."""
        return _FAMILIES[self.name][1](x.clone(), self.alpha)

    def derivative_(self, x: Tensor) -> Tensor:
        """dS/dx computed in place over ``x`` (a scratch tensor): the BPTT hot path."""
        return _FAMILIES[self.name][1](x, self.alpha)

    def smooth(self, x: Tensor) -> Tensor:
        """The smooth step S(x) whose derivative the backward pass uses."""
        return _FAMILIES[self.name][0](x, self.alpha)


def _sigmoid_smooth(x: Tensor, a: float) -> Tensor:
    return torch.sigmoid(a * x)


# The *_grad functions below overwrite their argument (callers pass a scratch tensor): on
# (T, B, N) tensors every avoided allocation is a full pass over memory saved.


def _sigmoid_grad(x: Tensor, a: float) -> Tensor:
    s = x.mul_(a).sigmoid_()
    return s.sub_(s.square()).mul_(a)


def _fast_sigmoid_smooth(x: Tensor, a: float) -> Tensor:
    # SuperSpike (Zenke & Ganguli 2018): x / (1 + |x|), rescaled to a 0 -> 1 step.
    return 0.5 * (1 + a * x / (1 + a * x.abs()))


def _fast_sigmoid_grad(x: Tensor, a: float) -> Tensor:
    y = x.abs_().mul_(a).add_(1)
    return y.mul_(y).reciprocal_().mul_(0.5 * a)


def _arctan_smooth(x: Tensor, a: float) -> Tensor:
    return torch.atan(math.pi / 2 * a * x) / math.pi + 0.5


def _arctan_grad(x: Tensor, a: float) -> Tensor:
    y = x.mul_(math.pi / 2 * a)
    return y.mul_(y).add_(1).reciprocal_().mul_(0.5 * a)


def _boxcar_smooth(x: Tensor, a: float) -> Tensor:
    return (a * x + 0.5).clamp(0, 1)


def _boxcar_grad(x: Tensor, a: float) -> Tensor:
    inside = x.abs_().mul_(a) < 0.5
    return x.copy_(inside).mul_(a)


def _triangle_smooth(x: Tensor, a: float) -> Tensor:
    y = (a * x).clamp(-1, 1)
    return 0.5 + y - 0.5 * y * y.abs()


def _triangle_grad(x: Tensor, a: float) -> Tensor:
    return x.abs_().mul_(-a).add_(1).clamp_(min=0).mul_(a)


_Fn = Callable[[Tensor, float], Tensor]

# name -> (smooth step, derivative, default alpha)
_FAMILIES: dict[str, tuple[_Fn, _Fn, float]] = {
    "sigmoid": (_sigmoid_smooth, _sigmoid_grad, 4.0),
    "fast_sigmoid": (_fast_sigmoid_smooth, _fast_sigmoid_grad, 10.0),
    "arctan": (_arctan_smooth, _arctan_grad, 2.0),
    "boxcar": (_boxcar_smooth, _boxcar_grad, 1.0),
    "triangle": (_triangle_smooth, _triangle_grad, 1.0),
}

SURROGATES: tuple[str, ...] = tuple(_FAMILIES)


def default_alpha(name: str) -> float:
    """The sharpness a surrogate uses when the config leaves ``alpha`` unset."""
    return _FAMILIES[choose("neuron.surrogate", name, SURROGATES)][2]


def get_surrogate(name: str, alpha: float | None = None) -> Surrogate:
    """The surrogate called ``name``; the error lists the valid names."""
    choose("neuron.surrogate", name, SURROGATES)
    return Surrogate(name, float(default_alpha(name) if alpha is None else alpha))


def sigmoid(alpha: float = 4.0) -> Surrogate:
    """Logistic surrogate: S = sigmoid(alpha x)."""
    return Surrogate("sigmoid", alpha)


def fast_sigmoid(alpha: float = 10.0) -> Surrogate:
    """SuperSpike surrogate: dS/dx = alpha / (2 (1 + alpha |x|)^2)."""
    return Surrogate("fast_sigmoid", alpha)


def arctan(alpha: float = 2.0) -> Surrogate:
    """Arctan surrogate: dS/dx = (alpha/2) / (1 + (pi alpha x / 2)^2)."""
    return Surrogate("arctan", alpha)


def boxcar(alpha: float = 1.0) -> Surrogate:
    """Rectangular surrogate: dS/dx = alpha on |x| < 1/(2 alpha)."""
    return Surrogate("boxcar", alpha)


def triangle(alpha: float = 1.0) -> Surrogate:
    """Triangular surrogate: dS/dx = alpha max(0, 1 - alpha |x|)."""
    return Surrogate("triangle", alpha)
