"""REINFORCE: returns, baseline, schedules, clipping, state round trip, and it learns."""

import math

import numpy as np
import pytest
import torch

from spikeopt.config import Config, ConfigError, RLConfig, apply
from spikeopt.methods import make_method
from spikeopt.methods.reinforce import REINFORCE, advantages, discounted, entropy_weight
from spikeopt.nn.policies import build_policy
from tests.helpers import CONTROL_TINY

TINY = CONTROL_TINY


def test_discounted_returns_include_the_last_reward():
    np.testing.assert_allclose(discounted(np.array([0.0, 0.0, 2.0]), 0.5), [0.5, 1.0, 2.0])


def test_entropy_weight_decays_linearly_then_holds():
    r = RLConfig()
    assert entropy_weight(0, r) == pytest.approx(0.15)
    assert entropy_weight(25, r) == pytest.approx(0.08)
    assert entropy_weight(50, r) == entropy_weight(80, r) == pytest.approx(0.01)


def test_advantage_modes():
    g = np.array([1.0, 2.0, 3.0])
    adv, b = advantages(g, None, RLConfig(normalize="returns"))
    z = (g - 2.0) / g.std()
    np.testing.assert_allclose(adv, z, atol=1e-6)  # first baseline = mean of z = 0
    adv, b = advantages(g, 1.0, RLConfig(normalize="advantages", baseline_ema=0.5))
    np.testing.assert_allclose(adv, (g - 1.0) / g.std())
    assert b == pytest.approx(0.5 * 1.0 + 0.5 * 2.0)
    adv, b = advantages(g, 5.0, RLConfig(normalize="none", baseline="none"))
    np.testing.assert_allclose(adv, g)
    assert b == 0.0


def _episode(n_obs=2):
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(6, n_obs)).astype(np.float32),
        rng.integers(0, 4, 6),
        rng.normal(size=6),
    )


def test_a_step_applies_lr_decay_clipping_and_counts_episodes():
    cfg = apply(
        Config(), {**TINY, "optim.lr": 0.1, "optim.clip_value": 1e-4, "optim.clip_norm": 1.0}
    )
    torch.manual_seed(0)
    model = build_policy(cfg, 2, 4)
    method = make_method(cfg, None)  # type: ignore[arg-type]
    state = method.init(model, cfg)
    state.episodes = 10
    before = [p.detach().clone() for p in model.parameters()]
    state, m = method.step(state, [_episode(), _episode()])
    assert m["lr"] == pytest.approx(0.1 * 0.985**10)
    assert state.episodes == 12 and state.step == 1
    # value clipping at 1e-4 then Adam: no entry moves by more than ~lr
    for p, b in zip(model.parameters(), before):
        assert (p - b).abs().max() <= 0.1 * 0.985**10 * 1.01
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    for key in ("loss", "entropy", "entropy_weight", "baseline", "grad_norm", "layer0_rate"):
        assert math.isfinite(m[key])


def test_state_dict_round_trip_keeps_baseline_and_episodes():
    cfg = apply(Config(), TINY)
    method = REINFORCE(cfg)
    state = method.init(build_policy(cfg, 2, 4), cfg)
    state, _ = method.step(state, [_episode()])
    d = method.state_dict(state)
    fresh = method.load_state_dict(method.init(build_policy(cfg, 2, 4), cfg), d)
    assert fresh.baseline == state.baseline and fresh.episodes == 1 and fresh.step == 1
    for a, b in zip(fresh.model.parameters(), state.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "key,value", [("rl.normalize", "zscore"), ("rl.baseline", "mean"), ("rl.gamma", 1.5),
                  ("rl.baseline_ema", 0.0), ("rl.lr_decay", 1.0), ("rl.entropy_episodes", -1)]
)  # fmt: skip
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        REINFORCE(apply(Config(), {**TINY, key: value}))


def test_empty_batches_are_refused():
    cfg = apply(Config(), TINY)
    method = REINFORCE(cfg)
    state = method.init(build_policy(cfg, 2, 4), cfg)
    with pytest.raises(ValueError, match="at least one episode"):
        method.step(state, [])
