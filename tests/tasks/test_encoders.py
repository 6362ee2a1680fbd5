"""Encoders: shapes, stride-0 repeat, reproducible rate sampling, exact deterministic trains."""

import pytest
import torch

from spikeopt.config import ConfigError, EncoderConfig
from spikeopt.tasks.encoders import (
    ENCODERS,
    deterministic_rate,
    latency,
    make_encoder,
    rate,
    repeat,
    step_shape,
)


def test_repeat_is_a_stride_zero_view():
    x = torch.rand(4, 3, 2)
    r = repeat(x, 10)
    assert r.shape == (4, 10, 3, 2) and r.stride(1) == 0
    assert torch.equal(r[:, 7], x)


def test_rate_is_reproducible_and_has_the_right_mean():
    x = torch.full((2000,), 0.3)
    a = rate(x, 8, generator=torch.Generator().manual_seed(5))
    b = rate(x, 8, generator=torch.Generator().manual_seed(5))
    c = rate(x, 8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.mean().item() == pytest.approx(0.3, abs=0.02)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_deterministic_rate_counts_are_floor_t_p():
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0, 0.33]])
    s = deterministic_rate(x, 12)
    assert s.sum(1).flatten().tolist() == [0.0, 3.0, 6.0, 12.0, 3.0]


def test_latency_fires_once_bright_first():
    s = latency(torch.tensor([[1.0, 0.5, 0.0]]), 5)
    assert s.sum(1).flatten().tolist() == [1.0, 1.0, 0.0]
    assert s[0, :, 0].argmax().item() == 0 and s[0, :, 1].argmax().item() == 2


@pytest.mark.parametrize("kind", ENCODERS)
def test_every_encoder_gives_batch_time_first(kind):
    enc = make_encoder(EncoderConfig(kind=kind, steps=6))
    x = torch.rand(3, 5)
    out = enc(x, torch.Generator().manual_seed(0))
    assert out.shape[:2] == ((3, 5) if kind in ("sequence", "events") else (3, 6))


def test_events_passes_frames_through_scaled_and_a_step_is_one_frame():
    x = torch.rand(2, 4, 3, 5)  # (B, T, C, L) frames
    assert make_encoder(EncoderConfig(kind="events", steps=4))(x, None) is x
    scaled = make_encoder(EncoderConfig(kind="events", gain=2.0))(x, None)
    assert torch.equal(scaled, 2 * x)
    assert step_shape(EncoderConfig(kind="events"), (4, 3, 5)) == (3, 5)


def test_bad_encoder_settings():
    with pytest.raises(ConfigError, match="encoder.kind"):
        make_encoder(EncoderConfig(kind="poisson2"))
    with pytest.raises(ConfigError, match="encoder.steps"):
        make_encoder(EncoderConfig(kind="rate", steps=0))


def test_sequence_window_is_a_tapped_delay_line():
    x = torch.arange(1.0, 6.0).view(1, 5)
    out = make_encoder(EncoderConfig(kind="sequence", window=3))(x, None)
    assert out.shape == (1, 5, 3)
    assert out[0, 0].tolist() == [0.0, 0.0, 1.0] and out[0, 4].tolist() == [3.0, 4.0, 5.0]


def test_sequence_hold_repeats_each_sample():
    out = make_encoder(EncoderConfig(kind="sequence", hold=2))(torch.tensor([[1.0, 2.0]]), None)
    assert out.flatten().tolist() == [1.0, 1.0, 2.0, 2.0]
