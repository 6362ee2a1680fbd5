"""Guided ES: the search covariance, the warm start, learning, exact resume, bad settings."""

import csv
import math

import pytest
import torch

from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.methods.guided_es import sample, subspace
from spikeopt.train.loop import build, train
from tests.helpers import Crash, crash_after

TINY = {"es.population": 16, "model.hidden": [32], "encoder.steps": 4, "trainer.epochs": 3,
        "trainer.steps_per_epoch": 3, "trainer.progress": False, "data.batch_size": 32}  # fmt: skip


def test_subspace_is_an_orthonormal_basis_of_the_history():
    g = torch.Generator().manual_seed(0)
    hist = [torch.randn(7, generator=g, dtype=torch.float64) for _ in range(3)]
    u = subspace([*hist, torch.zeros(7, dtype=torch.float64)])  # a zero gradient adds nothing
    assert u.shape == (7, 3)
    assert torch.allclose(u.T @ u, torch.eye(3, dtype=torch.float64), atol=1e-12)
    for h in hist:  # every gradient lies in span(U)
        assert torch.allclose(u @ (u.T @ h), h, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 0.2, 1.0])
def test_sampled_directions_have_the_guided_covariance(alpha):
    n, k = 6, 2
    g = torch.Generator().manual_seed(1)
    u = subspace([torch.randn(n, generator=g, dtype=torch.float64) for _ in range(k)])
    e = sample(200_000, u, alpha, g)
    sigma_guided = alpha / n * torch.eye(n, dtype=torch.float64) + (1 - alpha) / k * u @ u.T
    cov = e.T @ e / e.shape[0]  # zero mean by construction
    # e ~ N(0, n Sigma): Sigma exactly as stated, scaled so sigma is a per-weight scale
    assert torch.allclose(cov / n, sigma_guided, atol=0.01 / n)
    assert float(e.mean(0).abs().max()) < 0.02


def test_warm_start_is_plain_bptt_then_the_es_phase():
    over = {**TINY, "guided.warmup_steps": 2}
    exp = build(api.resolve("digits-guided-es", {**over, "optim.lr": 2e-3}))
    ref = build(
        api.resolve("digits-guided-es", {**over, "method.name": "surrogate", "optim.lr": 2e-3})
    )
    x, y = exp.data.x_train[:32], exp.data.y_train[:32]
    batch = (exp.encode(x, None), y)
    phases = []
    for _ in range(2):
        _, m = exp.method.step(exp.state, batch)
        ref.method.step(ref.state, batch)
        phases.append(m["es_phase"])
    assert all(torch.equal(a, b) for a, b in zip(exp.model.parameters(), ref.model.parameters()))
    _, m = exp.method.step(exp.state, batch)
    assert [*phases, m["es_phase"]] == [0.0, 0.0, 1.0]
    assert m["subspace_dim"] == 3 and -1 <= m["cos_surrogate"] <= 1 and math.isfinite(m["fit_std"])


def test_guided_es_learns_digits_well_above_chance():
    # ~2 s on one core; seeds 0-2 reach about 0.85-0.9 with these settings
    over = {"trainer.epochs": 2, "model.hidden": [64], "trainer.progress": False}
    summary = api.run("digits-guided-es", over, quiet=True)
    assert summary["test_acc"] > 0.6  # chance is 0.10


def test_guided_es_resume_continues_exactly(tmp_path):
    over = {**TINY, "guided.warmup_steps": 2, "guided.k": 2}
    full = api.run("digits-guided-es", over, out=tmp_path / "full", quiet=True)
    with pytest.raises(Crash):
        api.run(
            "digits-guided-es", over, out=tmp_path / "cut", quiet=True, callbacks=[crash_after(2)]
        )
    resumed = api.run("digits-guided-es", out=tmp_path / "cut", resume=True, quiet=True)
    for key in ("test_acc", "train_acc", "test_loss", "iterations"):
        assert resumed[key] == full[key], key
    rows = [list(csv.DictReader((tmp_path / d / "metrics.csv").open())) for d in ("full", "cut")]
    assert [r["train_loss"] for r in rows[1]] == [r["train_loss"] for r in rows[0]]


@pytest.mark.parametrize(
    ("over", "match"),
    [({"guided.alpha": 1.5}, "guided.alpha"), ({"guided.alpha": -0.1}, "guided.alpha"),
     ({"guided.k": 0}, "guided.k"), ({"guided.warmup_steps": -1}, "guided.warmup_steps"),
     ({"es.population": 7}, "even"), ({"es.shaping": "ranks"}, "es.shaping")],
)  # fmt: skip
def test_bad_guided_settings_fail_before_training(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        train(api.resolve("digits-guided-es", {**TINY, **over}), tmp_path / "x", quiet=True)
    assert not (tmp_path / "x").exists()
