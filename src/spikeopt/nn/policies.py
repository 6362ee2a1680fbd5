"""Policies: a network from :func:`build_model` read out as logits over discrete actions.

The predecessor's spiking policy is ``build_model`` with ``model.hidden=[128, 128]``, an LI
readout, Kaiming init and the output layer scaled by 0.01; the MLP baseline is
``model.arch=cnn`` (for vector inputs a ReLU MLP). An observation (B, D) is fed as a constant
current for ``encoder.steps`` time steps: :func:`encode` builds (B, T, D) with a stride-0
time axis, so the first layer computes its current once, not T times.

Logits (B, A): ``membrane`` -- the output layer's membrane averaged over time (for the MLP,
its logits); ``rate`` -- the output layer's spikes per step; either times
``policy.logit_scale``. A whole ES population acts in one batched pass through
:func:`spikeopt.tasks.control.population_logits`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from spikeopt.config import Config, ConfigError, PolicyConfig, check_choices
from spikeopt.nn.models import build_model

READOUTS: tuple[str, ...] = ("membrane", "rate")
OBS_ENCODINGS: tuple[str, ...] = ("raw", "signed")


def input_dim(cfg: PolicyConfig, obs_dim: int) -> int:
    """Width of the network input for ``obs_dim`` observation values."""
    if cfg.obs_scale and len(cfg.obs_scale) != obs_dim:
        raise ConfigError(
            f"policy.obs_scale has {len(cfg.obs_scale)} values but observations have {obs_dim}; "
            "give one per dimension or [] for none"
        )
    return 2 * obs_dim if cfg.obs_encoding == "signed" else obs_dim


def build_policy(cfg: Config, obs_dim: int, n_actions: int) -> nn.Module:
    """The network ``cfg.model`` describes, sized for this environment."""
    check_choices(cfg.policy)
    if cfg.encoder.steps < 1:
        raise ConfigError(f"encoder.steps must be >= 1, got {cfg.encoder.steps}")
    return build_model(cfg, (input_dim(cfg.policy, obs_dim),), n_actions)


def encode(obs: np.ndarray | Tensor, cfg: PolicyConfig, steps: int) -> Tensor:
    """Observations (..., D) -> constant input current (..., T, D') with a stride-0 time axis."""
    x = torch.as_tensor(obs, dtype=torch.float32)
    if cfg.obs_scale:
        x = x * torch.tensor(cfg.obs_scale, dtype=torch.float32)
    if cfg.obs_encoding == "signed":
        x = torch.cat([x.clamp(min=0), (-x).clamp(min=0)], -1)
    return x.unsqueeze(-2).expand(*x.shape[:-1], steps, x.shape[-1])


def readout(spikes: list[Tensor], mems: list[Tensor], cfg: PolicyConfig) -> Tensor:
    """Logits (..., A) from the output layer's (..., T, A) activity."""
    out = mems[-1] if cfg.readout == "membrane" else spikes[-1]
    return out.mean(-2) * cfg.logit_scale


def policy_logits(
    model: nn.Module, obs: np.ndarray | Tensor, cfg: Config
) -> tuple[Tensor, list[Tensor]]:
    """Logits (B, A) of the model on observations (B, D) and its spikes (for firing rates)."""
    spikes, mems = model(encode(obs, cfg.policy, cfg.encoder.steps))
    return readout(spikes, mems, cfg.policy), spikes


def entropy(logits: Tensor) -> Tensor:
    """Entropy of the softmax policy (...,)."""
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)
