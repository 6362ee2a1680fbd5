"""Spiking layers and model builders."""

from spikeopt.nn.init import fluct_init
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
    "fluct_init",
    "init_weights",
    "is_static",
    "n_params",
    "set_surrogate",
]
