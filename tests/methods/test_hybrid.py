"""The hybrid method: lam = 0 is BPTT exactly, the correction is orthogonal, normalised norms."""

import copy
import math

import pytest
import torch

from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.methods.hybrid import combine, project_out
from spikeopt.tasks.classification import ClassificationObjective as Classification
from spikeopt.train.loop import build, train

TINY = {"es.population": 16, "model.hidden": [32], "encoder.steps": 4, "trainer.epochs": 2,
        "trainer.steps_per_epoch": 3, "trainer.progress": False, "data.batch_size": 32}  # fmt: skip


def _flat(ts):
    return torch.cat([t.flatten() for t in ts])


def test_lambda_zero_gives_exactly_the_surrogate_trajectory():
    # dropout draws from the global RNG: the population must not shift the next BPTT draw
    over = {**TINY, "model.dropout": 0.3, "hybrid.lam": 0.0}
    runs = []
    for name in ("surrogate", "hybrid"):
        exp = build(api.resolve("digits-hybrid", {**over, "method.name": name}))
        torch.manual_seed(7)
        batches = [(exp.encode(exp.data.x_train[i : i + 32], None), exp.data.y_train[i : i + 32])
                   for i in range(0, 160, 32)]  # fmt: skip
        losses = [exp.method.step(exp.state, b)[1]["loss"] for b in batches]
        runs.append((losses, [p.detach().clone() for p in exp.model.parameters()]))
    (ls, ws), (lh, wh) = runs
    assert lh == ls  # every step's loss, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(ws, wh))
    rows = {}
    for name in ("surrogate", "hybrid"):  # and through the loop: shuffling, epochs, evaluation
        rows[name] = []
        train(api.resolve("digits-hybrid", {**over, "method.name": name}), quiet=True,
              callbacks=[rows[name].append])  # fmt: skip
    assert len(rows["hybrid"]) == len(rows["surrogate"]) == 2
    for rs, rh in zip(rows["surrogate"], rows["hybrid"]):  # the hybrid only adds its diagnostics
        assert {k: rh[k] for k in rs if k != "wall_s"} == {k: rs[k] for k in rs if k != "wall_s"}


def test_combine_projects_out_the_surrogate_direction_and_normalises():
    g = torch.Generator().manual_seed(0)
    g_s = [
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(3, generator=g, dtype=torch.float64),
    ]
    g_es = [
        10 * torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(3, generator=g, dtype=torch.float64),
    ]
    g_orth = project_out(g_es, g_s)
    assert float(_flat(g_orth) @ _flat(g_s)) == pytest.approx(0.0, abs=1e-12)
    out, st = combine(g_s, g_es, 0.3, normalize=True)
    corr = _flat(out) - _flat(g_s)
    assert torch.allclose(corr, st["lambda_eff"] * _flat(g_orth))
    assert st["lambda_eff"] * st["g_orth_norm"] == pytest.approx(0.3 * st["g_s_norm"], rel=1e-12)
    assert st["corr_frac"] == pytest.approx(0.3 / math.hypot(1, 0.3))
    _, raw = combine(g_s, g_es, 0.3, normalize=False)
    assert raw["lambda_eff"] == 0.3 and raw["g_orth_norm"] > raw["g_s_norm"]  # the noisy case
    same, _ = combine(g_s, g_es, 0.0, normalize=True)
    assert same is g_s


def test_a_real_step_applies_g_s_plus_the_normalised_orthogonal_correction():
    exp = build(api.resolve("digits-hybrid", {**TINY, "hybrid.lam": 0.25}))
    x, y = exp.data.x_train[:32], exp.data.y_train[:32]
    batch = (exp.encode(x, None), y)
    ref = copy.deepcopy(exp.model).train()
    g_s = _flat(Classification(exp.loss, exp.cfg.es).gradient(ref, batch))
    _, m = exp.method.step(exp.state, batch)
    grad = _flat([p.grad for p in exp.model.parameters()])  # what the optimizer applied
    corr = grad - g_s
    assert float(corr @ g_s) == pytest.approx(0.0, abs=1e-5 * float(g_s.norm()) ** 2)
    assert float(corr.norm()) == pytest.approx(0.25 * float(g_s.norm()), rel=1e-4)
    assert m["g_s_norm"] == pytest.approx(float(g_s.norm()), rel=1e-5)
    assert m["lambda_eff"] * m["g_orth_norm"] == pytest.approx(0.25 * m["g_s_norm"], rel=1e-6)
    for key in ("loss", "acc", "grad_norm", "cos_es", "corr_frac", "fit_std", "sigma"):
        assert math.isfinite(m[key]), key
    assert -1 <= m["cos_es"] <= 1


@pytest.mark.parametrize(
    ("over", "match"),
    [({"hybrid.lam": -0.1}, "hybrid.lam"), ({"hybrid.lam": float("nan")}, "hybrid.lam"),
     ({"hybrid.shaping": "rank"}, "hybrid.shaping: .* valid: centered_rank"),
     ({"es.population": 15}, "even"), ({"es.sigma": 0.0}, "es.sigma")],
)  # fmt: skip
def test_bad_hybrid_settings_fail_before_training(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        train(api.resolve("digits-hybrid", {**TINY, **over}), tmp_path / "x", quiet=True)
    assert not (tmp_path / "x").exists()
