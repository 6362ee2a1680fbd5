"""Encoders: a batch of static samples (B, ...) -> an input train (B, T, ...).

``repeat`` returns an ``expand``-ed view whose time axis has stride 0; layers see that and
compute their input current once instead of T times (see ``spikeopt.nn.layers.is_static``).
``events`` passes binned event frames through: their time axis is the data's own.
``rate`` samples Bernoulli spikes from an explicit ``torch.Generator``, so a run (and every
member of an ES population, which shares one draw) is reproducible from its seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from spikeopt.config import ConfigError, EncoderConfig, check_choices
from spikeopt.tasks.datasets import Dataset


def repeat(x: Tensor, steps: int) -> Tensor:
    """The float input at every step (direct encoding), as a stride-0 view (B, T, ...)."""
    return x.unsqueeze(1).expand(x.shape[0], steps, *x.shape[1:])


def rate(
    x: Tensor, steps: int, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Bernoulli (Poisson-like) spikes with probability ``clip(gain * x, 0, 1)`` per step."""
    p = (gain * x).clamp(0, 1)
    u = torch.rand((x.shape[0], steps, *x.shape[1:]), generator=generator, device=x.device)
    return (u < p.unsqueeze(1)).to(x.dtype)


def deterministic_rate(x: Tensor, steps: int, gain: float = 1.0) -> Tensor:
    """Regular spike trains of rate ``clip(gain * x, 0, 1)``: a spike when floor(t p) steps up."""
    p = (gain * x).clamp(0, 1).unsqueeze(1)
    t = torch.arange(1, steps + 1, device=x.device, dtype=x.dtype).view(
        1, steps, *[1] * (x.dim() - 1)
    )
    return (torch.floor(t * p + 1e-6) - torch.floor((t - 1) * p + 1e-6)).clamp(0, 1)


def latency(x: Tensor, steps: int, gain: float = 1.0, threshold: float = 0.01) -> Tensor:
    """One spike per input at step ``round((1 - clip(gain x)) (T - 1))``: bright fires first."""
    v = (gain * x).clamp(0, 1)
    when = torch.round((1 - v) * (steps - 1)).long()
    out = torch.zeros((x.shape[0], steps, *x.shape[1:]), dtype=x.dtype, device=x.device)
    out.scatter_(1, when.unsqueeze(1), 1.0)
    return out * (v > threshold).unsqueeze(1).to(x.dtype)


def sequence(x: Tensor, window: int = 1, hold: int = 1) -> Tensor:
    """Time series (B, L) or (B, L, C) -> (B, L, C * window): step t sees samples t-window+1..t.

    A tapped delay line gives each step a little local shape (zeros before the start), which a
    recurrent SNN fed one scalar per step otherwise has to hold in its membranes.
    """
    x = x.unsqueeze(-1) if x.dim() == 2 else x
    if window > 1:
        padded = torch.nn.functional.pad(x, (0, 0, window - 1, 0))  # zeros before t = 0
        x = padded.unfold(1, window, 1).flatten(2)  # (B, L, C, window) -> (B, L, C * window)
    return x.repeat_interleave(hold, dim=1) if hold > 1 else x


def events(x: Tensor, gain: float = 1.0) -> Tensor:
    """Binned event frames (B, T, ...) as they are, scaled by ``gain``: the data holds time."""
    return gain * x if gain != 1.0 else x


def as_frames(data: Dataset, time_axis: int | None) -> Dataset:
    """Samples whose axis ``time_axis`` is time, as frames (T, ...) with time first; arrays
    that are frames already pass (only time_axis=0, or None, is consistent with them)."""
    if data.frames and time_axis in (None, 0):
        return data
    ndim = data.x_train.ndim - 1
    if data.frames or time_axis is None or not -ndim <= time_axis < ndim:
        axis = "frames (T, ...): omit data.time_axis" if data.frames else (
            f"(shape {tuple(data.input_shape)}): set data.time_axis=0 for (T, ...) samples or "
            "data.time_axis=-1 for (..., T); it is never guessed")  # fmt: skip
        raise ConfigError(f"encoder.kind=events needs to know which axis of a sample is time; "
                          f"data.time_axis={time_axis} for {data.name}'s {axis}")  # fmt: skip
    move = time_axis % ndim + 1
    return dataclasses.replace(data, x_train=data.x_train.movedim(move, 1),
                               x_test=data.x_test.movedim(move, 1), frames=True)  # fmt: skip


ENCODERS: tuple[str, ...] = ("repeat", "rate", "deterministic", "latency", "sequence", "events")

Encoder = Callable[[Tensor, "torch.Generator | None"], Tensor]


def make_encoder(cfg: EncoderConfig) -> Encoder:
    """``encode(x, generator) -> (B, T, ...)`` for the configured kind."""
    check_choices(cfg)
    kind = cfg.kind
    if cfg.steps < 1 and kind != "sequence":
        raise ConfigError(f"encoder.steps must be >= 1, got {cfg.steps}")
    if cfg.window < 1 or cfg.hold < 1:
        raise ConfigError(
            f"encoder.window and encoder.hold must be >= 1, got {cfg.window}, {cfg.hold}"
        )
    steps, gain = cfg.steps, cfg.gain

    def encode(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if kind == "repeat":
            return repeat(gain * x if gain != 1.0 else x, steps)
        if kind == "rate":
            return rate(x, steps, gain, generator)
        if kind == "deterministic":
            return deterministic_rate(x, steps, gain)
        if kind == "latency":
            return latency(x, steps, gain)
        if kind == "events":
            return events(x, gain)
        return sequence(x, cfg.window, cfg.hold)

    return encode


def step_shape(cfg: EncoderConfig, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-step input shape the model sees for samples of ``sample_shape``."""
    if cfg.kind == "sequence":
        channels = 1 if len(sample_shape) == 1 else sample_shape[-1]
        return (channels * cfg.window,)
    if cfg.kind == "events":  # frames (T, ...): a step is one frame
        return tuple(sample_shape[1:])
    return tuple(sample_shape)
