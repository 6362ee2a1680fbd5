"""Model builders ``mlp``, ``conv``, ``rsnn`` and the non-spiking ``cnn`` baseline.

Every model maps ``x`` (B, T, *input_shape) to ``(spikes_list, membranes_list)``: one tensor
(B, T, N) per spiking layer, the last one the readout. No state survives a call.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError, check_choices
from spikeopt.nn.layers import ConvLIF, LinearLIF, RecurrentLIF, init_weights, is_static

# s5 and gru are language models (nn/language.py, trainer.task=language)
ARCHS: tuple[str, ...] = ("mlp", "conv", "rsnn", "cnn", "s5", "gru")
OUTPUT_LAYERS: tuple[str, ...] = ("lif", "li")  # model.readout: LinearLIF(li=False | True)


class SNN(nn.Module):
    """Spiking layers applied in order; inputs are flattened before layer ``flatten_at``."""

    def __init__(self, layers: list[nn.Module], flatten_at: int = 0, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.flatten_at = flatten_at
        self.dropout = dropout

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x (B, T, ...) -> spikes and membranes of every layer, each (B, T, N)."""
        spikes, mems = [], []
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == self.flatten_at:
                h = h.flatten(2)  # keeps a stride-0 time axis, so static inputs stay static
            s, v = layer(h)
            spikes.append(s.flatten(2))
            mems.append(v)
            h = layer.pool_out(s) if isinstance(layer, ConvLIF) else s
            if self.dropout > 0 and self.training and i < last:
                # One mask for all time steps: a dropped neuron is silent for the whole sample.
                h = h * F.dropout(torch.ones_like(h[:, :1]), self.dropout, training=True)
        return spikes, mems


class CNN(nn.Module):
    """Non-spiking baseline (conv-BN-ReLU-pool blocks, or an MLP for vector inputs).

    It sees the mean input over time and returns its logits (B, 1, C) as both lists, so the
    same loop, losses (``ce_mean``) and metrics check the data pipeline without spikes.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_out: int,
        channels: list[int],
        hidden: list[int],
        k: int,
        pool: str = "max",
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        pools: dict[str, list[type[nn.Module]]] = {"max": [nn.MaxPool2d], "avg": [nn.AvgPool2d]}
        if len(input_shape) == 3:
            c, hw = input_shape[0], input_shape[1]
            for c_out in channels:
                blocks += [
                    nn.Conv2d(c, c_out, k, padding=k // 2),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(),
                    *[kind(2) for kind in pools.get(pool, [])],
                ]
                c, hw = c_out, (hw if pool == "none" else hw // 2)
            n = c * hw * hw
        else:
            n = math.prod(input_shape)
        blocks.append(nn.Flatten())
        for h in hidden:
            blocks += [nn.Linear(n, h), nn.ReLU()]
            n = h
        # the output layer is registered once, inside body: a second registration would tie
        # two names to one parameter, which functional_call under vmap (ES) cannot restore
        self.body = nn.Sequential(*blocks, nn.Linear(n, n_out))

    @property
    def out(self) -> nn.Linear:
        """The output layer."""
        out = self.body[-1]
        assert isinstance(out, nn.Linear)
        return out

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x (B, T, ...) -> ([logits (B, 1, C)], [logits (B, 1, C)])."""
        frame = x[:, 0] if is_static(x) else x.mean(1)
        logits = self.body(frame).unsqueeze(1)
        return [logits], [logits]


def build_model(cfg: Config, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The model ``cfg.model`` describes, for per-step inputs of ``input_shape``."""
    m, neuron = cfg.model, cfg.neuron
    check_choices(m)
    check_choices(neuron)
    if m.neurons_per_class < 1:
        raise ConfigError("model.neurons_per_class must be >= 1")
    if m.readout_tau < 0:
        raise ConfigError(f"model.readout_tau must be >= 0 (0 = neuron.tau_m), got {m.readout_tau}")
    if m.arch in ("s5", "gru"):
        raise ConfigError(f"model.arch={m.arch} is a character-level language model; use it "
                          "with trainer.task=language (docs/language.md)")  # fmt: skip
    n_out = n_classes * m.neurons_per_class
    if m.arch == "cnn":
        cnn = CNN(input_shape, n_out, m.channels, m.hidden, m.kernel_size, m.cnn_pool)
        init_weights(cnn, m.init, cnn.out, m.out_scale)
        return cnn
    layers: list[nn.Module] = []
    flatten_at = 0
    if m.arch == "conv":
        if len(input_shape) != 3:
            raise ConfigError(
                f"model.arch=conv needs image inputs (C, H, W) or 1-D signals (C, 1, L), got "
                f"per-step shape {input_shape}; use model.arch=mlp or rsnn"
            )
        c, h, w = input_shape
        for c_out in m.channels:
            layers.append(ConvLIF(c, c_out, m.kernel_size, neuron, m.pool, m.norm, (h, w)))
            if m.pool != "none":
                h, w = (1 if h == 1 else h // 2), w // 2
            c = c_out
        n = c * h * w
        flatten_at = len(layers)
    else:
        n = math.prod(input_shape)
    for h in m.hidden:
        layers.append(RecurrentLIF(n, h, neuron) if m.arch == "rsnn" else LinearLIF(n, h, neuron))
        n = h
    # The readout's own time constant: a slow LI readout integrates the evidence of sparse
    # hidden spikes into confident scores while the hidden neurons stay fast (MNIST-1D RSNN).
    out_neuron = dataclasses.replace(neuron, tau_m=m.readout_tau) if m.readout_tau else neuron
    out = LinearLIF(n, n_out, out_neuron, li=m.readout == "li")
    layers.append(out)
    model = SNN(layers, flatten_at, m.dropout)
    init_weights(model, m.init, out.fc, m.out_scale)
    return model
