"""``to_nir``: a spikeopt SNN as a NIR graph (the conventions: :mod:`spikeopt.nir`)."""

from __future__ import annotations

import math
from typing import Any

import nir
import numpy as np
import torch
from torch import Tensor, nn

from spikeopt.config import ConfigError
from spikeopt.nn.layers import LIF, ConvLIF, LinearLIF, RecurrentLIF
from spikeopt.nn.models import SNN


class NIRError(ConfigError):
    """A model NIR cannot express, or a graph spikeopt cannot rebuild (exit code 2)."""


def _arr(x: float | Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` (a float, or a per-neuron tensor) as a float64 array of ``shape``."""
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy().reshape(shape)
    return np.full(shape, float(x))


def _neuron_nodes(lif: LIF, shape: tuple[int, ...], dt: float, li: bool) -> dict:
    """NIR nodes of one population (keys relative to its layer); ``in``/``out`` name the nodes
    its input enters and its spikes (or an LI's membrane) leave."""
    p = lif.params()
    beta = _arr(p.beta, shape)
    tau = dt / (1 - beta)
    for _ in range(4):  # nudge tau by ulps so that 1 - dt/tau gives beta back exactly
        off = (1 - dt / tau) - beta
        if not off.any():
            break
        tau = np.where(
            off > 0, np.nextafter(tau, 0), np.where(off < 0, np.nextafter(tau, np.inf), tau)
        )
    r, v_leak = tau / dt, np.full(shape, p.v_rest)
    theta = _arr(p.v_threshold, shape)
    if li:
        return {"in": "li", "out": "li", "li": nir.LI(tau=tau, r=r, v_leak=v_leak)}
    if p.reset == "zero":
        v_reset = np.full(shape, p.v_reset)
        node = nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=theta, v_reset=v_reset)
        return {"in": "lif", "out": "lif", "lif": node}
    return {
        "in": "li",
        "out": "spike",
        "li": nir.LI(tau=tau, r=r, v_leak=v_leak),
        "spike": nir.Threshold(threshold=theta),
        "reset": nir.Scale(scale=-beta * theta),
    }


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _conv_node(layer: ConvLIF, hw: tuple[int, int]) -> nir.Conv2d:
    """The layer's convolution, batch norm (running statistics) folded into it."""
    conv = layer.conv
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0])
    if layer.bn is not None:
        bn = layer.bn
        assert bn.running_var is not None and bn.running_mean is not None
        g = (bn.weight.detach() if bn.weight is not None else 1) / torch.sqrt(
            bn.running_var + bn.eps
        )
        b = (b - bn.running_mean) * g + (bn.bias.detach() if bn.bias is not None else 0)
        w = w * g[:, None, None, None]
    pad: Any = conv.padding
    if hw[0] == 1:  # nir 1.0.8 sizes a (1, k) kernel's output as if it were (1, 1): say 'same'
        if w.shape[-1] % 2 == 0:
            raise NIRError("to_nir: a 1-D conv with an even model.kernel_size is not 'same'-padded")
        pad = "same"
    return nir.Conv2d(input_shape=hw, weight=_np(w), stride=conv.stride, padding=pad,
                      dilation=conv.dilation, groups=conv.groups, bias=_np(b))  # fmt: skip


def to_nir(model: nn.Module, dt: float, input_shape: tuple[int, ...] | None = None) -> nir.NIRGraph:
    """The NIR graph of a spikeopt ``SNN`` (mlp, conv, rsnn) with time step ``dt``.

    ``input_shape`` is one time step's input (C, H, W) or (N,); it is read from the model
    when omitted (the conv layers' sizes, or the first dense layer's inputs).
    """
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"to_nir: dt must be a positive number (the time step), got {dt!r}")
    if not isinstance(model, SNN):
        raise NIRError(
            f"to_nir: {type(model).__name__} is not a spikeopt SNN (model.arch=mlp, conv or "
            "rsnn); the non-spiking cnn baseline and user models have no NIR form here"
        )
    first = model.layers[0]
    if input_shape is not None:
        shape = tuple(int(n) for n in input_shape)
    elif isinstance(first, ConvLIF):  # what the first layer reads
        shape = (first.conv.in_channels, *first.hw)
    elif isinstance(first, (LinearLIF, RecurrentLIF)):
        shape = (first.fc.in_features,)
    else:
        raise NIRError(f"to_nir: layer 0 ({type(first).__name__}) has no NIR form")
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(shape))}
    edges: list[tuple[str, str]] = []
    prev = "input"

    def chain(name: str, node: Any) -> None:
        nonlocal prev
        nodes[name] = node
        edges.append((prev, name))
        prev = name

    for i, layer in enumerate(model.layers):
        if i == model.flatten_at and len(shape) > 1:
            chain(f"{i}.flatten", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0))
            shape = (math.prod(shape),)
        if isinstance(layer, ConvLIF):
            if len(shape) != 3:
                raise NIRError(f"to_nir: layer {i} is a conv layer but its input is {shape}")
            chain(f"{i}.conv", _conv_node(layer, (shape[1], shape[2])))
            shape = (layer.conv.out_channels, shape[1], shape[2])
        elif isinstance(layer, (LinearLIF, RecurrentLIF)):
            fc = layer.fc
            syn = (nir.Affine(weight=_np(fc.weight), bias=_np(fc.bias)) if fc.bias is not None
                   else nir.Linear(weight=_np(fc.weight)))  # fmt: skip
            chain(f"{i}.fc", syn)
            shape = (fc.out_features,)
        else:
            raise NIRError(f"to_nir: layer {i} ({type(layer).__name__}) has no NIR form")
        li = isinstance(layer, LinearLIF) and layer.li
        group = _neuron_nodes(layer.neuron, shape, float(dt), li)
        entry, out = group.pop("in"), group.pop("out")
        for key, node in group.items():
            nodes[f"{i}.{key}"] = node
        edges.append((prev, f"{i}.{entry}"))
        if "reset" in group:
            edges += [(f"{i}.li", f"{i}.spike"), (f"{i}.spike", f"{i}.reset"),
                      (f"{i}.reset", f"{i}.li")]  # fmt: skip
        if isinstance(layer, RecurrentLIF):
            nodes[f"{i}.rec"] = nir.Linear(weight=_np(layer.rec.weight))
            edges += [(f"{i}.{out}", f"{i}.rec"), (f"{i}.rec", f"{i}.{entry}")]
        prev = f"{i}.{out}"
        if isinstance(layer, ConvLIF) and layer.pool != "none":
            if layer.pool != "avg":
                raise NIRError(
                    f"to_nir: layer {i} max-pools its spikes; NIR has sum and average pooling "
                    "only. Train with model.pool=avg (or none) to export"
                )
            k = np.array(layer.window)
            chain(f"{i}.pool", nir.AvgPool2d(kernel_size=k, stride=k, padding=np.zeros(2, int)))
            shape = (shape[0], *(s // int(kw) for s, kw in zip(shape[1:], k)))
    nodes["output"] = nir.Output(output_type=np.array(shape))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": float(dt)})


__all__ = ["NIRError", "to_nir"]
