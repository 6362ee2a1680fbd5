"""The control loop: it learns, metrics.csv is never empty, resume is exact, ES runs batched."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from spikeopt import api
from spikeopt.config import Config, ConfigError, apply
from spikeopt.nn.policies import build_policy
from spikeopt.population import Offsets, perturbed
from spikeopt.tasks.control import ControlObjective, episode_seed, run_policy
from spikeopt.tasks.envs import make_env
from spikeopt.train.loop import build, train
from tests.helpers import CONTROL_TINY, Crash

TINY = {
    **CONTROL_TINY,
    "optim.lr": 0.01,
    "optim.clip_value": 1.0,
    "optim.clip_norm": 1.0,
    "rl.gamma": 0.9,
    "rl.normalize": "advantages",
    "rl.lr_decay": 0.0,
    "rl.entropy_start": 0.01,
    "rl.entropy_end": 0.01,
    "rl.episodes": 30,
    "rl.baseline_episodes": 100,
    "rl.eval_episodes": 20,
    "trainer.device": "cpu",
    "trainer.progress": False,
}


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_reinforce_beats_the_random_policy():
    s = train(apply(Config(), TINY), None, quiet=True)
    assert s["success_rate"] >= s["random_success_rate"] + 0.25
    assert s["eval_success_rate"] == 1.0 and s["eval_steps_ratio"] <= 1.5
    assert s["greedy_success_rate"] == 1.0
    for key in ("post_convergence_success_rate", "converged_at", "composite", "eval_return"):
        assert key in s


def test_every_output_is_written_and_metrics_csv_is_never_empty(tmp_path):
    cfg = apply(Config(), {**TINY, "rl.episodes": 1, "rl.baseline_episodes": 2,
                           "rl.eval_episodes": 1})  # fmt: skip
    train(cfg, tmp_path, quiet=True, name="tiny")
    rows = rows_of(tmp_path / "metrics.csv")
    assert len(rows) == 1  # one row per episode, from the first episode on
    for col in ("return", "steps", "success", "steps_ratio", "loss", "lr", "entropy",
                "action_0", "action_3", "layer0_rate"):  # fmt: skip
        assert col in rows[0] and rows[0][col] != ""
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["recipe"] == "tiny" and summary["episodes"] == 1
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert any((tmp_path / "tb").iterdir())
    assert (tmp_path / "config.yaml").exists()


def test_resume_continues_exactly(tmp_path):
    cfg = apply(Config(), {**TINY, "rl.episodes": 4, "rl.batch_episodes": 2,
                           "rl.baseline_episodes": 0, "rl.eval_episodes": 2})  # fmt: skip
    full = train(cfg, tmp_path / "full", quiet=True)

    def crash(row):
        if row["episode"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, tmp_path / "cut", quiet=True, callbacks=[crash])
    resumed = train(cfg, tmp_path / "cut", resume=True, quiet=True)
    a, b = rows_of(tmp_path / "full" / "metrics.csv"), rows_of(tmp_path / "cut" / "metrics.csv")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        ra.pop("wall_s"), rb.pop("wall_s")
        assert ra == rb
    assert resumed["eval_return"] == full["eval_return"]
    wa = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["method"]["model"]
    wb = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["method"]["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])  # batched SNN path; vmap for the ReLU MLP
def test_population_fitness_uses_common_seeds_and_one_batch(arch):
    cfg = apply(Config(), {**TINY, "method.name": "es", "rl.batch_episodes": 3, "model.arch": arch})
    env = make_env(cfg.env)
    torch.manual_seed(0)
    model = build_policy(cfg, env.obs_dim, env.n_actions)
    seeds = [episode_seed(0, 2, i) for i in range(3)]
    objective = ControlObjective(env, cfg)
    params = [p for _, p in perturbed(model)]
    zero = Offsets(params, [torch.zeros(4, *p.shape) for p in params])
    fit = objective.fitness(model, zero, seeds)
    centre = objective.centre(model, seeds)
    assert fit.dtype == torch.float64 and fit.shape == (4,)
    assert torch.allclose(fit, torch.full((4,), centre["return"], dtype=torch.float64))
    # a member's fitness is its own policy's return: member 1 = the centre moved by its offset
    deltas = [torch.randn(2, *p.shape) * 0.5 for p in params]
    fit = objective.fitness(model, Offsets(params, deltas), seeds)
    with torch.no_grad():
        for p, d in zip(params, deltas):
            p.add_(d[1])
    ep, _ = run_policy(env, model, cfg, seeds, greedy=True)
    assert fit[1].item() == pytest.approx(float(ep.returns.mean()))


@pytest.mark.parametrize("method", ["es", "snes", "cma"])
def test_population_methods_train_a_control_policy_one_row_per_generation(method):
    cfg = apply(Config(), {**TINY, "method.name": method, "es.population": 8, "es.sigma": 0.1,
                           "model.hidden": [8], "rl.generations": 2, "rl.batch_episodes": 2,
                           "rl.baseline_episodes": 0, "rl.eval_episodes": 2})  # fmt: skip
    rows: list = []
    s = train(cfg, None, quiet=True, callbacks=[rows.append])
    assert [r["update"] for r in rows] == [1, 2] and s["iterations"] == 2
    assert all(math.isfinite(r["fit_mean"]) and "action_0" in r for r in rows)
    assert math.isfinite(s["eval_return"])


def test_bad_control_settings_fail_before_running():
    with pytest.raises(ConfigError, match="method.name"):
        build(apply(Config(), {**TINY, "method.name": "surrogate"}))
    with pytest.raises(ConfigError, match="rl.batch_episodes"):
        build(apply(Config(), {**TINY, "rl.batch_episodes": 0}))
    with pytest.raises(ConfigError, match="rl.converge_level"):
        build(apply(Config(), {**TINY, "rl.converge_level": 1.5}))
    with pytest.raises(ConfigError, match="policy.obs_scale"):
        build(apply(Config(), {**TINY, "policy.obs_scale": [1.0]}))
    with pytest.raises(ConfigError, match="policy.readout"):
        build(apply(Config(), {**TINY, "policy.readout": "max"}))


def test_sessions_write_per_session_outputs_and_mean_min_max(tmp_path):
    over = {k: v for k, v in TINY.items() if not k.startswith(("method", "optim", "rl.gamma"))}
    over.update({"rl.episodes": 2, "rl.baseline_episodes": 2, "rl.eval_episodes": 1})
    s = api.run("nav-reinforce", over, out=tmp_path, quiet=True, sessions=2, workers=1)
    assert [d["seed"] for d in s["sessions"]] == [0, 1] and s["n_sessions"] == 2
    rates = [d["success_rate"] for d in s["sessions"]]
    assert s["success_rate"] == pytest.approx(sum(rates) / 2)
    assert s["success_rate_min"] == min(rates) and s["success_rate_max"] == max(rates)
    for i in range(2):
        assert rows_of(tmp_path / f"session{i}" / "metrics.csv")
    top = json.loads((tmp_path / "summary.json").read_text())
    assert top["sessions"][1]["seed"] == 1
    with pytest.raises(ConfigError, match="already holds a run"):
        api.run("nav-reinforce", over, out=tmp_path, quiet=True, sessions=2, workers=1)
    # --resume on a finished multi-session folder reads every session back, nothing reruns
    (tmp_path / "session1" / "summary.json").unlink()  # as if session 1 had been killed
    again = api.run("nav-reinforce", out=tmp_path, resume=True, quiet=True)
    assert again["n_sessions"] == 2
    assert again["sessions"][1]["success_rate"] == s["sessions"][1]["success_rate"]


def test_reinforce_lr_decay_and_an_lr_schedule_are_exclusive():
    with pytest.raises(ConfigError, match="set sched.name=none or rl.lr_decay=0"):
        build(apply(Config(), {**TINY, "rl.lr_decay": 0.01, "sched.name": "step"}))
    cfg = apply(Config(), {**TINY, "rl.episodes": 3, "rl.baseline_episodes": 0,
                           "rl.eval_episodes": 0, "sched.name": "step", "sched.step_size": 1,
                           "sched.gamma": 0.5})  # fmt: skip
    rows: list = []
    train(cfg, None, quiet=True, callbacks=[rows.append])  # one update per episode
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.005, 0.0025])


@pytest.mark.parametrize("along, unit", [("episode", "episode"), ("update", "generation")])
def test_control_curves_name_what_a_point_is(along, unit):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spikeopt.tasks.control import _plot_rows

    fig, ax = plt.subplots()
    rows = [{"episode": 4.0 * (i + 1), "update": i + 1.0, "return": float(i)} for i in range(12)]
    _plot_rows(ax, rows, "return", along)
    assert ax.get_xlabel() == unit  # an ES row is one generation, not one episode
    assert list(ax.get_lines()[0].get_xdata()) == [r[along] for r in rows]
    assert ax.get_lines()[1].get_label() == f"return (mean of 10 {unit}s)"
    plt.close(fig)
