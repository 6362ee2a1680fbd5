"""Spiking layers and model builders."""

from spikeopt.nn.layers import (
    LIF,
    ConvLIF,
    LinearLIF,
    RecurrentLIF,
    init_weights,
    is_static,
    n_params,
    set_surrogate,
)
from spikeopt.nn.models import ARCHS, CNN, SNN, build_model

__all__ = [
    "ARCHS",
    "CNN",
    "LIF",
    "SNN",
    "ConvLIF",
    "LinearLIF",
    "RecurrentLIF",
    "build_model",
    "init_weights",
    "is_static",
    "n_params",
    "set_surrogate",
]
