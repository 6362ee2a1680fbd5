"""Character-level language models ``s5``, ``rsnn`` and the non-spiking ``gru`` baseline.

Each maps token ids ``x`` (B, T) to the model contract's ``(spikes_list, membranes_list)``
(:mod:`spikeopt.tasks.base`): one (B, T, N) tensor per layer, the last one the logits over
the vocabulary (B, T, V) at every position, so the readout is what the language task's loss
and sampler read. Non-spiking layers report their activations in both lists, as the ``cnn``
baseline does. No state survives a call (truncated BPTT: every window starts from zero).
"""

from __future__ import annotations

import dataclasses

import torch.nn.functional as F
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError, check_choices
from spikeopt.nn.layers import LinearLIF, RecurrentLIF
from spikeopt.nn.ssm import S5Block

LANGUAGE_ARCHS: tuple[str, ...] = ("s5", "rsnn", "gru")  # model.arch under trainer.task=language
EMBED_STD = 1.0  # rsnn: std of the one-hot input weights


def one_hot(x: Tensor, vocab: int) -> Tensor:
    """Token ids (B, T) -> one-hot floats (B, T, V); an id outside the vocabulary is refused."""
    if x.dtype.is_floating_point or x.dim() != 2:
        raise ConfigError(f"a language model takes token ids (B, T) as integers, got a "
                          f"{x.dtype} tensor of shape {tuple(x.shape)}")  # fmt: skip
    return F.one_hot(x, vocab).float()


class S5LM(nn.Module):
    """Embedding -> S5 blocks (``model.hidden`` widths must be equal) -> LayerNorm -> logits."""

    def __init__(self, vocab: int, width: int, depth: int, states: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(S5Block(width, states) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x (B, T) -> every block's output and the logits, each (B, T, N)."""
        one_hot(x[:, :1], self.vocab)  # the same input check as the other models
        h, layers = self.embed(x), []
        for block in self.blocks:
            h = block(h)
            layers.append(h)
        layers.append(self.out(self.norm(h)))
        return layers, layers


class GRULM(nn.Module):
    """Embedding -> stacked GRU -> logits: the non-spiking recurrent baseline."""

    def __init__(self, vocab: int, width: int, depth: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, width)
        self.gru = nn.GRU(width, width, depth, batch_first=True)
        self.out = nn.Linear(width, vocab)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x (B, T) -> the last GRU layer's states and the logits, each (B, T, N)."""
        one_hot(x[:, :1], self.vocab)
        h, _ = self.gru(self.embed(x))
        logits = self.out(h)
        return [h, logits], [h, logits]


class RSNNLM(nn.Module):
    """One-hot characters -> recurrent LIF layers -> a leaky-integrator readout over the
    vocabulary whose membrane is the logits (spikeopt's :class:`RecurrentLIF` and
    :class:`LinearLIF`, trained by surrogate-gradient BPTT)."""

    def __init__(self, cfg: Config, vocab: int) -> None:
        super().__init__()
        m, neuron = cfg.model, cfg.neuron
        self.vocab, self.hidden = vocab, nn.ModuleList()
        n = vocab
        for h in m.hidden:
            self.hidden.append(RecurrentLIF(n, h, neuron))
            n = h
        # one-hot inputs make the first layer an embedding: nn.Embedding's N(0, 1) init, not
        # Linear's U(+-1/sqrt(V)) (~0.1: every membrane stayed below threshold, no spikes)
        first = self.hidden[0]
        assert isinstance(first, RecurrentLIF)
        nn.init.normal_(first.fc.weight, std=EMBED_STD)
        out_neuron = dataclasses.replace(neuron, tau_m=m.readout_tau) if m.readout_tau else neuron
        self.readout = LinearLIF(n, vocab, out_neuron, li=True)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x (B, T) -> every hidden layer's spikes and membranes, then the readout's."""
        h, spikes, mems = one_hot(x, self.vocab), [], []
        for layer in self.hidden:
            h, v = layer(h)
            spikes.append(h)
            mems.append(v)
        logits, _ = self.readout(h)
        return [*spikes, logits], [*mems, logits]


def build_language_model(cfg: Config, vocab: int) -> nn.Module:
    """The language model ``model.arch`` names (s5 | rsnn | gru) over ``vocab`` tokens."""
    m = cfg.model
    check_choices(m)
    check_choices(cfg.neuron)
    if m.arch not in LANGUAGE_ARCHS:
        raise ConfigError(f"model.arch={m.arch} is not a language model; trainer.task=language "
                          f"takes model.arch={' | '.join(LANGUAGE_ARCHS)}")  # fmt: skip
    if not m.hidden:
        raise ConfigError("model.hidden is empty; a language model needs at least one layer, "
                          "e.g. model.hidden=[128]")  # fmt: skip
    if m.arch == "rsnn":
        return RSNNLM(cfg, vocab)
    if len(set(m.hidden)) != 1:
        w = m.hidden[0]
        raise ConfigError(
            f"model.arch={m.arch} stacks layers of one width (residual); got "
            f"model.hidden={m.hidden}, e.g. use [{w}, {w}]"
        )
    if m.arch == "gru":
        return GRULM(vocab, m.hidden[0], len(m.hidden))
    return S5LM(vocab, m.hidden[0], len(m.hidden), cfg.lang.states)


__all__ = ["GRULM", "LANGUAGE_ARCHS", "RSNNLM", "S5LM", "build_language_model", "one_hot"]
