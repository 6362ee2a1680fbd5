"""Pure functions: neuron steps, surrogate spike functions, readouts and losses."""

from spikeopt.functional.loss import LOSSES, Loss, ce_count, cross_entropy, make_loss
from spikeopt.functional.neuron import (
    LIFParams,
    LIFState,
    beta_from_tau,
    li_sequence,
    li_step,
    lif_sequence,
    lif_step,
)
from spikeopt.functional.surrogate import SURROGATES, Surrogate, get_surrogate

__all__ = [
    "LOSSES",
    "SURROGATES",
    "LIFParams",
    "LIFState",
    "Loss",
    "Surrogate",
    "beta_from_tau",
    "ce_count",
    "cross_entropy",
    "get_surrogate",
    "li_sequence",
    "li_step",
    "lif_sequence",
    "lif_step",
    "make_loss",
]
