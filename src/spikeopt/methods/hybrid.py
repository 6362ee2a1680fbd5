"""The 0+1 hybrid: the surrogate gradient, corrected by ES where the surrogate is blind.

One step on one minibatch (every member and the BPTT pass share it and its encoder noise)::

    g_s    = dL_surrogate/dtheta                  BPTT, exactly as the surrogate method
    g_es   = antithetic NES estimate of dL/dtheta  the ES method's estimate: hard spikes
    g_orth = g_es - (<g_es, g_s> / |g_s|^2) g_s    the part of g_es the surrogate cannot see
    lam_eff = lam                                  or, with hybrid.normalize,
    lam_eff = lam |g_s| / |g_orth|                 the correction is a fixed fraction of the step
    p.grad = g_s + lam_eff g_orth                  then apply_update, as every method

The correction is orthogonal to g_s, so it never cancels or rescales the surrogate step; with
a raw lam the noisy estimate can dwarf g_s (a predecessor measured |g_orth| ~ 41 against
|g_s| ~ 8.6), which ``normalize`` prevents by construction. ``lam = 0`` is the surrogate method
bit for bit: the population runs on a forked RNG, so it cannot shift the next dropout draw.
(The hybrid of a method-first SNN toolkit; Maheswaranathan et al. 2019 for the motivation.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spikeopt.config import Config, ConfigError, check_choices
from spikeopt.methods.base import TrainState, backprop, surrogate_grads
from spikeopt.methods.es import ES
from spikeopt.methods.strategy import Generation
from spikeopt.population import get_shaping


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return sum(float((x * y).sum()) for x, y in zip(a, b))


def _norm(a: list[Tensor]) -> float:
    return math.sqrt(_dot(a, a))


def project_out(g: list[Tensor], d: list[Tensor]) -> list[Tensor]:
    """``g`` minus its component along ``d`` (``g`` itself when ``d`` is zero)."""
    dd = _dot(d, d)
    c = _dot(g, d) / dd if dd > 0 else 0.0
    return [x - c * y for x, y in zip(g, d)]


def combine(
    g_s: list[Tensor], g_es: list[Tensor], lam: float, normalize: bool
) -> tuple[list[Tensor], dict[str, float]]:
    """``g_s + lam_eff * g_orth`` and its diagnostics (norms, lam_eff, correction fraction).
    ``lam = 0`` returns ``g_s`` itself, untouched."""
    g_orth = project_out(g_es, g_s)
    ns, no = _norm(g_s), _norm(g_orth)
    lam_eff = lam * ns / no if normalize and no > 0 else lam
    stats = {
        "g_s_norm": ns,
        "g_orth_norm": no,
        "lambda_eff": lam_eff,
        # share of the combined step's norm that is correction (the parts are orthogonal)
        "corr_frac": lam_eff * no / math.hypot(ns, lam_eff * no) if ns or lam_eff * no else 0.0,
    }
    if lam == 0:
        return g_s, stats
    return [s + lam_eff * o for s, o in zip(g_s, g_orth)], stats


class Hybrid(ES):
    """Surrogate gradient plus a weighted ES correction orthogonal to it (see module doc).

    Metrics of a step: ``loss``/``acc`` of the BPTT forward (as the surrogate method reports
    them), ``grad_norm`` of the combined gradient before clipping, ``g_s_norm``,
    ``g_orth_norm``, ``lambda_eff``, ``corr_frac`` (share of the step's norm that is
    correction), ``cos_es`` (cosine of g_s and the ES estimate of the true-loss gradient),
    ``sigma`` and the population's ``fit_*`` statistics.
    """

    name = "hybrid"
    tasks = ("classification",)
    sections = ("es", "hybrid")
    cosine_key = "cos_es"

    def check(self, cfg: Config) -> None:
        """ES's checks, plus lam and the hybrid's own fitness shaping."""
        super().check(cfg)
        h = cfg.hybrid
        check_choices(h)
        if not math.isfinite(h.lam) or h.lam < 0:
            raise ConfigError(f"hybrid.lam must be a finite number >= 0, got {h.lam}")
        self.shaping = get_shaping(h.shaping)

    def passes(self, step: int) -> tuple[int, int]:
        """One BPTT pass and the population."""
        return 1 + self.cfg.es.population, 1

    def centre(self, state: TrainState, gen: Generation) -> None:
        """BPTT on the batch: its loss/acc, and the surrogate gradient in ``p.grad``."""
        assert self.loss is not None
        gen.rng = torch.get_rng_state()
        gen.metrics.update(backprop(state, self.loss, gen.batch))
        gen.surrogate = surrogate_grads(gen.params)

    def tell(self, state: TrainState, gen: Generation) -> list[Tensor]:
        """``g_s + lam_eff g_orth``; with lam = 0 BPTT's own ``p.grad``: the surrogate method."""
        assert gen.surrogate is not None
        gen.estimate = super().tell(state, gen)
        h = self.cfg.hybrid
        grads, stats = combine(gen.surrogate, gen.estimate, h.lam, h.normalize)
        gen.metrics.update(stats)
        return grads if h.lam > 0 else [p.grad for p in gen.params]  # type: ignore[misc]
