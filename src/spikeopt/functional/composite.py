"""Composite losses: a weighted sum of terms, each called with only the arguments it declares.

A term is any callable whose parameter names come from :data:`ARGS`::

    spikes  list of spike tensors per layer, (..., B, T, N); the last is the output layer
    mems    list of membrane tensors, same shapes
    y       labels (B,)
    scores  class scores (..., B, C) from the readout ``loss.name`` names
    k       output neurons per class (population coding)
    params  the model's parameters (bound by ``make_loss(..., model)``)
    weights the weights every weight layer runs, each with a leading member axis (m, *shape):
            m = 1 and the model's own (parametrised) weights under BPTT; under a population
            method every member's own, so a weight term is part of each member's fitness

so ``def my_term(scores, y): ...`` never sees membranes it does not use, and a typo in an
argument name fails when the loss is built, naming the valid ones. Terms keep the leading
(population) axes like every loss here; in the batched ES path a hidden layer reaches a term
as its per-member mean rate (``(c, 1, 1, 1)``), which is all the built-in rate term reads.
A term that reads ``params`` sees the centre's weights under ES (the same for every member),
so it shapes BPTT training and is logged under ES but cannot steer the ES search.

The hardware terms ``magnitude`` (``hw.magnitude_limit``) and ``topology`` (row blocks of
``hw.sign_block``) read ``weights``: :mod:`spikeopt.functional.weights`.

Config: ``loss.terms=[ce, rate]`` with ``loss.ce_weight``, ``loss.rate_weight``, ... -- the
``loss.<term>_<param>`` keys Tune binds (``bind_loss_param("rate", "weight", ...)``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from spikeopt.config import ConfigError, HWConfig, LossConfig, check_choices
from spikeopt.functional.readout import Loss, cross_entropy, cross_entropy_samples
from spikeopt.functional.weights import effective, magnitude_excess, topology, weight_layers

ARGS: tuple[str, ...] = ("spikes", "mems", "y", "scores", "k", "params", "weights")
TermFn = Callable[..., Tensor]
# every member's run weights while a population chunk is scored (see member_weights)
_MEMBERS: ContextVar[list[Tensor] | None] = ContextVar("member_weights", default=None)


@contextmanager
def member_weights(weights: list[Tensor] | None) -> Iterator[None]:
    """Inside the block, a term's ``weights`` are these (c, *shape) member weights."""
    token = _MEMBERS.set(weights)
    try:
        yield
    finally:
        _MEMBERS.reset(token)


@dataclass(frozen=True)
class Term:
    """One weighted term of a composite loss; ``args`` are the names ``fn`` declares."""

    name: str
    fn: TermFn
    weight: float = 1.0
    samples: TermFn | None = None  # the same term per sample (..., B), when it has one

    @property
    def args(self) -> tuple[str, ...]:
        """The argument names ``fn`` declares (checked against :data:`ARGS`)."""
        names = tuple(inspect.signature(self.fn).parameters)
        unknown = [a for a in names if a not in ARGS]
        if unknown:
            raise ConfigError(
                f"loss term '{self.name}' declares {', '.join(unknown)}; a term may take "
                f"only {', '.join(ARGS)}"
            )
        return names


def ce() -> TermFn:
    """Cross-entropy of the readout's class scores (count, mean, max or final membrane)."""

    def term(scores: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(scores, y)

    return term


def population_mse(on: float = 1.0, off: float = 0.0, per_sample: bool = False) -> TermFn:
    """MSE of every output neuron's firing rate against ``on`` for the neurons of the correct
    class's population and ``off`` for the others (population coding with ``k`` per class);
    ``per_sample``: each sample's mean over neurons (..., B)."""

    def term(spikes: Sequence[Tensor], y: Tensor, k: int) -> Tensor:
        rates = spikes[-1].mean(-2)  # (..., B, C*k)
        cls = torch.arange(rates.shape[-1], device=rates.device) // k  # class of each neuron
        target = torch.where(cls == y[:, None], on, off).to(rates.dtype)
        err = (rates - target).pow(2)
        return err.mean(-1) if per_sample else err.mean((-2, -1))

    return term


def ce_samples(scores: Tensor, y: Tensor) -> Tensor:
    """The ``ce`` term of every sample (..., B)."""
    return cross_entropy_samples(scores, y)


def rate_target(targets: Sequence[float]) -> TermFn:
    """Sum over hidden layers of (mean firing rate - target_i)^2; one target = every layer."""
    goal = list(targets)

    def term(spikes: Sequence[Tensor]) -> Tensor:
        hidden = spikes[:-1]
        if len(goal) not in (1, len(hidden)):
            raise ConfigError(
                f"loss.rate_targets has {len(goal)} values for {len(hidden)} hidden layers; "
                "give one per hidden layer or a single value"
            )
        total = spikes[-1].new_zeros(spikes[-1].shape[:-3])
        for i, s in enumerate(hidden):
            total = total + (s.mean((-3, -2, -1)) - goal[i % len(goal)]) ** 2
        return total

    return term


def weight_limit(limit: float) -> TermFn:
    """Mean over weight entries (dims >= 2) of relu(|w| - limit)^2: zero inside the limit."""
    if limit <= 0:
        raise ConfigError(f"loss.wlimit must be > 0, got {limit}")

    def term(params: Sequence[Tensor]) -> Tensor:
        weights = [p for p in params if p.dim() >= 2]
        if not weights:
            raise ConfigError("the wlimit term needs the model's weights: build the loss with "
                              "make_loss(cfg, k, model)")  # fmt: skip
        excess = torch.cat([torch.relu(w.abs() - limit).pow(2).flatten() for w in weights])
        return excess.mean()

    return term


def magnitude(limit: float) -> TermFn:
    """Mean of relu(|w| - limit)^2 over the run weights' entries, per member (m,)."""

    def term(weights: Sequence[Tensor]) -> Tensor:
        return magnitude_excess(list(weights), limit, lead=1)

    return term


def sign_topology(block: int) -> TermFn:
    """Mean over weights of the magnitude against each row block's sign, per member (m,)."""

    def term(weights: Sequence[Tensor]) -> Tensor:
        return topology(list(weights), block, lead=1)

    return term


# name -> builder from the loss and hw configs (a term's parameters are loss.<name>_* keys;
# the weight terms' are hw.* keys, a chip's limits)
TERMS: dict[str, Callable[[LossConfig, HWConfig], TermFn]] = {
    "ce": lambda c, h: ce(),
    "mse": lambda c, h: population_mse(c.mse_on, c.mse_off),
    "rate": lambda c, h: rate_target(c.rate_targets or [c.rate_target]),
    "wlimit": lambda c, h: weight_limit(c.wlimit),
    "magnitude": lambda c, h: magnitude(h.magnitude_limit),
    "topology": lambda c, h: sign_topology(h.sign_block),
}
WEIGHT_TERMS = ("magnitude", "topology")  # read the run weights: scored per member
# the terms that are a mean over samples, per sample (the others are batch-level)
SAMPLE_TERMS: dict[str, Callable[[LossConfig], TermFn]] = {
    "ce": lambda c: ce_samples,
    "mse": lambda c: population_mse(c.mse_on, c.mse_off, per_sample=True),
}


@dataclass(frozen=True)
class Composite(Loss):
    """``sum_i weight_i * term_i``; scores come from the ``name`` readout (as :class:`Loss`)."""

    terms: tuple[Term, ...] = ()
    params: tuple[Tensor, ...] = ()
    layers: tuple[nn.Module, ...] = ()  # the weight layers ``weights`` reads

    def __post_init__(self) -> None:
        if not self.terms:
            raise ConfigError("a composite loss needs at least one term, e.g. loss.terms=[ce]")
        for t in self.terms:
            _ = t.args  # unknown argument names fail here, before training

    def components(
        self, spikes: Sequence[Tensor], mems: Sequence[Tensor], y: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Each term's unweighted value (kept per leading axis) and the class scores."""
        scores = self.scores(spikes, mems)
        avail = self._avail(spikes, mems, y, scores)
        return {t.name: self._call(t.fn, avail) for t in self.terms}, scores

    def _avail(self, spikes: Any, mems: Any, y: Tensor, scores: Tensor) -> dict[str, Any]:
        members = _MEMBERS.get()
        own = members is None
        weights = [effective(m).unsqueeze(0) for m in self.layers] if own else members
        return {"spikes": spikes, "mems": mems, "y": y, "scores": scores, "own": own,
                "k": self.neurons_per_class, "params": self.params, "weights": weights}  # fmt: skip

    @staticmethod
    def _call(fn: TermFn, avail: dict[str, Any]) -> Tensor:
        names = inspect.signature(fn).parameters
        out = fn(**{a: avail[a] for a in names})
        # the model's own weights carry a member axis of one: drop it (a scalar, as BPTT needs)
        return out[0] if "weights" in names and avail["own"] else out

    def __call__(
        self, spikes: Sequence[Tensor], mems: Sequence[Tensor], y: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Weighted sum of the terms and the class scores."""
        parts, scores = self.components(spikes, mems, y)
        total = sum((t.weight * parts[t.name] for t in self.terms), torch.zeros(()))
        return total, scores

    def per_sample(
        self, spikes: Sequence[Tensor], mems: Sequence[Tensor], y: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The loss as ``samples.mean(-1) + shared`` (see :meth:`Loss.per_sample`): terms
        with a per-sample form go to ``samples``, every other term (rate, wlimit, a user's)
        to ``shared``."""
        scores = self.scores(spikes, mems)
        avail = self._avail(spikes, mems, y, scores)
        lead = scores.shape[:-1]
        samples, shared = scores.new_zeros(lead), scores.new_zeros(lead[:-1])
        for t in self.terms:
            fn = t.samples or t.fn
            value = t.weight * self._call(fn, avail)
            if t.samples is not None:
                samples = samples + value
            else:
                shared = shared + value
        return samples, shared


def make_composite(
    cfg: LossConfig,
    neurons_per_class: int = 1,
    model: nn.Module | None = None,
    hw: HWConfig | None = None,
) -> Composite:
    """The composite ``loss.terms`` names, weighted by ``loss.<term>_weight``."""
    check_choices(cfg)  # loss.name (the readout) and every name in loss.terms
    hw = hw or HWConfig()
    terms = []
    for name in cfg.terms:
        weight = float(getattr(cfg, f"{name}_weight"))
        samples = SAMPLE_TERMS[name](cfg) if name in SAMPLE_TERMS else None
        terms.append(Term(name, TERMS[name](cfg, hw), weight, samples))
    if model is None and any(n in WEIGHT_TERMS for n in cfg.terms):
        raise ConfigError("the magnitude and topology terms need the model's weights: build "
                          "the loss with make_loss(cfg, k, model)")  # fmt: skip
    params = tuple(model.parameters()) if model is not None else ()
    layers = tuple(m for _, m in weight_layers(model)) if model is not None else ()
    return Composite(cfg.name, neurons_per_class, terms=tuple(terms), params=params,
                     layers=layers)  # fmt: skip
