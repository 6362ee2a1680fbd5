"""ANN -> SNN conversion: a trained non-spiking :class:`~spikeopt.nn.models.CNN` becomes an
integrate-and-fire network of spikeopt's own layers (:class:`ConvLIF`, :class:`LinearLIF`).

Data-based normalisation (Diehl et al. 2015, "Fast-classifying, high-accuracy spiking deep
networks through weight and threshold balancing", IJCNN) with the robust percentile of
Rueckauer et al. 2017 ("Conversion of continuous-valued deep networks to efficient event-driven
networks for image classification", Front. Neurosci. 11:682): layer ``l``'s scale ``lam_l`` is
the ``q``-th percentile of its positive ReLU activations on training batches, and

    W_l <- W_l * lam_{l-1} / lam_l * v_th        b_l <- b_l / lam_l * v_th      (lam_0 = 1)

so a neuron's spike rate (spikes per step) approximates ``clip(a_l / lam_l, 0, 1)``. Scaling
the weights instead of the thresholds is the same network, and keeps it the one the builders
make from a config (``neuron.v_threshold`` for every layer). Reset by subtraction keeps the
charge above threshold (Rueckauer's fix for the rate error of reset to zero); IF neurons (no
leak) by default. Batch norm is folded into the convolution before scaling. The output layer
is a non-leaky integrator whose last membrane sums the ANN's logits over the T steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError
from spikeopt.nn.layers import ConvLIF
from spikeopt.nn.models import CNN, SNN, build_model

IF_TAU = 1e9  # tau_m of an IF neuron: exp(-1 / 1e9) rounds to 1.0 in float32, so no leak
SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AvgPool2d, nn.Flatten, nn.Linear)


@dataclass
class Stage:
    """One weight layer of the ANN: its synapses, folded batch norm, ReLU and pooling."""

    layer: nn.Conv2d | nn.Linear
    bn: nn.BatchNorm2d | None = None
    relu: bool = False
    pool: bool = False


def stages(ann: nn.Module) -> list[Stage]:
    """The ANN's weight layers in order; a ConfigError names any module conversion cannot map."""
    if not isinstance(ann, CNN):
        raise ConfigError(
            f"conversion converts the non-spiking model.arch=cnn network, not a "
            f"{type(ann).__name__}; set model.arch=cnn"
        )
    out: list[Stage] = []
    for m in ann.body:
        if isinstance(m, nn.MaxPool2d):
            raise ConfigError(
                "conversion cannot map max pooling (a max over spike trains over-counts); "
                "train the ANN with model.cnn_pool=avg (or none)"
            )
        if not isinstance(m, SUPPORTED):
            raise ConfigError(
                f"conversion cannot map a {type(m).__name__} layer; it maps "
                f"{', '.join(t.__name__ for t in SUPPORTED)}"
            )
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out.append(Stage(m))
        elif isinstance(m, nn.BatchNorm2d):
            out[-1].bn = m
        elif isinstance(m, nn.ReLU):
            out[-1].relu = True
        elif isinstance(m, nn.AvgPool2d):
            out[-1].pool = True
    if len(out) < 2:
        raise ConfigError(
            "conversion needs at least one hidden layer (model.hidden or model.channels): a "
            "single linear layer has no neurons to convert"
        )
    return out


@torch.no_grad()
def relu_activations(ann: nn.Module, frames: Tensor) -> list[Tensor]:
    """Each hidden layer's ReLU output (before pooling) for input frames (B, ...), eval mode."""
    ann.eval()
    acts, h = [], frames
    for m in ann.body:  # type: ignore[union-attr]
        h = m(h)
        if isinstance(m, nn.ReLU):
            acts.append(h)
    return acts


@torch.no_grad()
def layer_scales(ann: nn.Module, batches: list[Tensor], percentile: float) -> list[float]:
    """``lam_l``: the ``percentile`` of each hidden layer's positive ReLU activations."""
    stages(ann)  # refuse what cannot be converted before measuring anything
    per_layer: list[list[Tensor]] = []
    for frames in batches:
        for i, a in enumerate(relu_activations(ann, frames)):
            if len(per_layer) <= i:
                per_layer.append([])
            per_layer[i].append(a[a > 0].flatten().cpu())
    scales = []
    for parts in per_layer:
        values = torch.cat(parts).double().numpy()
        # a layer silent on every batch passes nothing on: any scale gives the same network
        scales.append(float(np.percentile(values, percentile)) if values.size else 1.0)
    return scales


def _folded(stage: Stage) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``stage`` with its (eval-mode) batch norm folded in."""
    w = stage.layer.weight.detach().clone()
    b = stage.layer.bias
    bias = b.detach().clone() if b is not None else torch.zeros(w.shape[0], device=w.device)
    if stage.bn is not None:
        bn = stage.bn
        assert bn.running_mean is not None and bn.running_var is not None
        gain = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = w * gain.view(-1, *([1] * (w.dim() - 1)))
        bias = (bias - bn.running_mean) * gain + bn.bias.detach()
    return w, bias


def snn_config(cfg: Config, image: bool) -> Config:
    """The config whose builders make the converted network of ``cfg``'s ANN (``image``: it
    has conv blocks, as :class:`CNN` builds for (C, H, W) inputs; else dense layers only)."""
    m, tau = cfg.model, cfg.conversion.tau_m or IF_TAU
    if cfg.neuron.v_threshold <= 0:
        raise ConfigError(
            f"conversion needs neuron.v_threshold > 0 (rates are current / threshold), got "
            f"{cfg.neuron.v_threshold}"
        )
    model = dataclasses.replace(
        m,
        arch="conv" if image else "mlp",
        module="",
        pool=m.cnn_pool,
        norm="none",
        readout="li",
        readout_tau=tau,
        init="default",
        out_scale=1.0,
        dropout=0.0,
    )
    neuron = dataclasses.replace(
        cfg.neuron, tau_m=tau, v_rest=0.0, reset="subtract", learn_tau=False, learn_threshold=False
    )
    return dataclasses.replace(
        cfg,
        model=model,
        neuron=neuron,
        loss=dataclasses.replace(cfg.loss, name="ce_final"),
        method=dataclasses.replace(cfg.method, name="surrogate"),
    )


@torch.no_grad()
def convert(
    ann: nn.Module,
    cfg: Config,
    batches: list[Tensor],
    input_shape: tuple[int, ...],
    n_classes: int,
) -> tuple[SNN, Config]:
    """The converted SNN of ``ann`` and the config that rebuilds it; ``batches`` are training
    input frames (B, ...) the ANN sees, on which the layer scales are measured."""
    parts = stages(ann)
    image = len(input_shape) == 3 and any(isinstance(p.layer, nn.Conv2d) for p in parts)
    snn_cfg = snn_config(cfg, image)
    scales = layer_scales(ann, batches, cfg.conversion.percentile)
    snn = build_model(snn_cfg, input_shape, n_classes)
    assert isinstance(snn, SNN)
    targets: list[nn.Conv2d | nn.Linear] = [
        layer.conv if isinstance(layer, ConvLIF) else layer.fc  # type: ignore[misc]
        for layer in snn.layers
    ]
    if len(targets) != len(parts):
        raise ConfigError(f"the converted network has {len(targets)} layers, the ANN {len(parts)}")
    theta, prev = cfg.neuron.v_threshold, 1.0
    for i, (stage, target) in enumerate(zip(parts, targets)):
        w, b = _folded(stage)
        if i == len(parts) - 1:  # the readout integrates the logits: no threshold to meet
            w_new, b_new = w * prev, b
        else:
            w_new, b_new = w * (prev / scales[i] * theta), b * (theta / scales[i])
            prev = scales[i]
        if target.weight.shape != w_new.shape:
            raise ConfigError(
                f"layer {i}: the ANN's weights {tuple(w_new.shape)} do not fit the converted "
                f"layer's {tuple(target.weight.shape)}"
            )
        target.weight.copy_(w_new)
        assert target.bias is not None
        target.bias.copy_(b_new)
    return snn.to(next(ann.parameters()).device), snn_cfg


__all__ = ["IF_TAU", "Stage", "convert", "layer_scales", "relu_activations", "snn_config", "stages"]
