"""The loss a config names: :func:`make_loss` builds ``loss.*`` into a callable.

``loss.name`` alone gives a :class:`~spikeopt.functional.readout.Loss` (a readout and its
cross-entropy or MSE, plus the optional firing-rate regulariser); ``loss.terms`` gives a
weighted :class:`~spikeopt.functional.composite.Composite`. Both modules sit below this one,
so neither imports the other through here. The readouts and losses themselves are re-exported
(``from spikeopt.functional.loss import Loss, cross_entropy``).
"""

from __future__ import annotations

from typing import Any

from spikeopt.config import LossConfig, check_choices
from spikeopt.functional.composite import make_composite
from spikeopt.functional.readout import (
    LOSSES,
    Loss,
    ce_count,
    count_scores,
    cross_entropy,
    cross_entropy_samples,
    final_scores,
    max_scores,
    mean_scores,
    mse_rate,
    mse_rate_samples,
    rate_penalty,
)

__all__ = ["LOSSES", "Loss", "ce_count", "count_scores", "cross_entropy", "cross_entropy_samples",
           "final_scores", "make_loss", "max_scores", "mean_scores", "mse_rate",
           "mse_rate_samples", "rate_penalty"]  # fmt: skip


def make_loss(
    cfg: LossConfig, neurons_per_class: int = 1, model: Any = None, hw: Any = None
) -> Loss:
    """Build the configured loss; the error lists the valid names. With ``loss.terms``, a
    weighted composite (:mod:`spikeopt.functional.composite`; ``model`` feeds its ``params``)."""
    if cfg.terms:
        return make_composite(cfg, neurons_per_class, model, hw)  # checks loss.* itself
    check_choices(cfg)
    return Loss(cfg.name, neurons_per_class, cfg.rate_reg, cfg.rate_target, cfg.mse_on, cfg.mse_off)
