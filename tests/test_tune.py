"""Hyperparameter search on a real local Ray: spaces, guard, reporting, best checkpoint, CLI."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from spikeopt import api, cli, tune
from spikeopt import config as C
from spikeopt.tasks.metrics import evaluate
from spikeopt.train.loop import build
from spikeopt.tune import command, space

TINY = {"es.population": 16, "model.hidden": [32], "encoder.steps": 4, "trainer.epochs": 3,
        "trainer.steps_per_epoch": 2, "data.batch_size": 32, "data.n_test": 200}  # fmt: skip


def test_yaml_space_has_every_kind_and_checks_keys_and_types(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text(
        textwrap.dedent("""
        optim.lr: {loguniform: [1e-3, 1e-1]}
        model:
          hidden: {choice: [[32], [64]]}
        es.sigma: {uniform: [0.02, 0.1]}
        es.population: {grid: [16, 32]}
        trainer.seed: {randint: [0, 10]}
        encoder.steps: 4
        """)
    )
    s = tune.Search("digits-es").bind_all(space.load(str(f)))
    assert sorted(s.space) == ["encoder.steps", "es.population", "es.sigma", "model.hidden",
                               "optim.lr", "trainer.seed"]  # fmt: skip
    assert s.space["es.population"] == {"grid_search": [16, 32]}
    assert s.space["optim.lr"].lower == pytest.approx(1e-3)  # "1e-3" is a YAML string
    assert space.largest(s.base, s.space).model.hidden == [64]
    for bad, match in [
        ({"optim.lrr": {"choice": [0.1]}}, "did you mean optim.lr"),
        ({"optim.lr": {"between": [0, 1]}}, "choice, grid, uniform, loguniform, randint"),
        ({"optim.lr": {"loguniform": [0, 1]}}, "0 < low < high"),
        ({"optim.lr": {"uniform": [1]}}, r"\[low, high\]"),
        ({"model.hidden": {"choice": ["wide"]}}, "model.hidden: expected int, got 'wide'"),
    ]:
        with pytest.raises(C.ConfigError, match=match):
            tune.Search("digits-es").bind_all(space.parse(bad))


def test_namespace_helpers_bind_dotted_keys_and_reject_unknown_ones():
    s = tune.Search("digits-es")
    s.bind_model_param("hidden", tune.choice([[32], [64]])).bind_optim_param("lr", 0.01)
    s.bind_method_param("sigma", tune.uniform(0.01, 0.1)).bind_surrogate_param("alpha", 2.0)
    s.bind_loss_param("", "rate_reg", tune.uniform(0.0, 1.0)).bind_trainer_param("seed", 3)
    s.bind_early_stop_param("patience", tune.randint(1, 5)).bind_sched_param("name", "cosine")
    assert {"model.hidden", "optim.lr", "es.sigma", "neuron.alpha", "loss.rate_reg",
            "trainer.seed", "early_stop.patience", "sched.name"} == set(s.space)  # fmt: skip
    with pytest.raises(C.ConfigError, match="did you mean model.hidden"):
        s.bind_model_param("hiden", tune.choice([[32]]))
    with pytest.raises(C.ConfigError, match="not a surrogate key"):
        s.bind_surrogate_param("tau_m", 2.0)
    with pytest.raises(C.ConfigError, match="optim.lr: expected float"):
        s.bind_optim_param("lr", tune.choice(["fast"]))
    with pytest.raises(C.ConfigError, match="asha, hyperband, median, fifo"):
        s.set_scheduler("pbt")
    with pytest.raises(C.ConfigError, match="nothing to search"):
        tune.Search("digits-es").run()


def test_memory_guard_caps_concurrency_and_refuses_too_much_early():
    assert tune.guard(1000.0, 0, 2500.0) == 2
    assert tune.guard(1000.0, 1, 2500.0) == 1
    with pytest.raises(C.ConfigError, match=r"at most 2 fit; set_max_concurrent_trials\(2\)"):
        tune.guard(1000.0, 3, 2500.0)
    with pytest.raises(C.ConfigError, match="lower data.batch_size"):
        tune.guard(3000.0, 0, 2500.0)
    small = tune.trial_mb(api.resolve("digits-es", {"data.batch_size": 32}))
    big = tune.trial_mb(api.resolve("digits-es", {"data.batch_size": 128}))
    assert 0 < small["activity_mb"] < big["activity_mb"] and small["data_mb"] == big["data_mb"]
    s = tune.Search("digits-es").bind_optim_param("lr", tune.uniform(0.001, 0.01))
    s.set_max_concurrent_trials(4).set_memory_budget(3 * s.memory_estimate()["total_mb"])
    with pytest.raises(C.ConfigError, match="at most 3 fit"):
        s.run()  # before Ray starts a single trial


def test_search_reports_every_epoch_restores_the_best_epoch_and_writes_a_runnable_config(
    ray_local, tmp_path
):
    # the one real search of the suite (Ray trials cost seconds each on 2 cores)
    s = tune.Search("digits-es", overrides=TINY, storage_path=tmp_path / "tune", name="api")
    s.bind("optim.lr", tune.choice([0.003, 0.03])).bind("trainer.seed", tune.grid([0, 1]))
    s.set_num_samples(1).set_scheduler("asha").set_max_concurrent_trials(2)
    results = s.run()
    assert not results.errors and len(results) == 2
    for r in results:
        df = r.metrics_dataframe
        assert 1 <= len(df) <= 3 and list(df["epoch"]) == list(range(1, len(df) + 1))
        for col in ("test_acc", "train_loss", "lr", "alpha", "layer0_rate", "layer0_dead_frac",
                    "layer0_mem_mean", "layer0_mem_var", "train_fit_mean", "stop_best",
                    "stop_wait"):  # fmt: skip
            assert col in df.columns, col
        assert list(df["stop_best"]) == list(df["test_acc"].cummax())
        assert list(Path(r.path).glob("events.out.tfevents*"))  # Ray's TensorBoard scalars
        assert list((Path(r.path) / "run" / "tb").glob("events.out.tfevents*"))  # the loop's
        own = (Path(r.path) / "run" / "metrics.csv").read_text().splitlines()
        assert len(own) == len(df) + 1  # each trial's loop outputs in its own folder
    best = s.best_result()
    best_acc = max(max(r.metrics_dataframe["test_acc"]) for r in results)
    assert max(best.metrics_dataframe["test_acc"]) == best_acc
    cfg = s.best_config()
    assert cfg.optim.lr == best.config["optim.lr"] and cfg.es.population == 16
    # the restored weights are the best epoch's: evaluating them reproduces its test_acc
    model, exp = s.best_model(), build(cfg)
    g = torch.Generator().manual_seed(cfg.trainer.seed + 12345)
    test = evaluate(model, exp.loss, exp.data.x_test, exp.data.y_test, exp.encode,
                    cfg.data.eval_batch_size, exp.device, g)  # fmt: skip
    assert test["acc"] == pytest.approx(best_acc, abs=1e-6)
    # what `spikeopt tune` writes after the search, and `spikeopt run --config` reading it
    summary = command.write_outputs(s)
    assert summary["best_test_acc"] == pytest.approx(best_acc)
    assert len(summary["trials"]) == 2 and all(t["error"] is None for t in summary["trials"])
    saved = json.loads((tmp_path / "tune" / "tune_summary.json").read_text())
    assert saved["best_trial"] == best.config
    written = C.load_yaml(summary["best_config"])
    assert written["optim"]["lr"] == best.config["optim.lr"]
    run = api.run("digits-es", {"trainer.epochs": 1}, summary["best_config"],
                  tmp_path / "rerun", quiet=True)  # fmt: skip
    assert run["epochs"] == 1 and run["test_acc"] is not None


def test_a_control_recipe_searches_on_its_episode_rows(ray_local, tmp_path):
    tiny = {"env.preset": "tiny", "model.hidden": [8], "encoder.steps": 2, "rl.episodes": 3,
            "rl.baseline_episodes": 0, "rl.eval_episodes": 1}  # fmt: skip
    s = tune.Search("nav-reinforce", overrides=tiny, storage_path=tmp_path / "tune", name="rl")
    s.bind("optim.lr", tune.grid([0.01, 0.001])).set_max_concurrent_trials(2)
    assert s.metric == "return" and s._max_t() == 3  # Ray's time unit: one row, one episode
    assert s.memory_estimate()["data_mb"] == 0  # no dataset: the policy's activity
    results = s.run()
    assert not results.errors and len(results) == 2
    for r in results:
        df = r.metrics_dataframe
        assert list(df["episode"]) == [1, 2, 3] and {"return", "success", "stop_best"} <= set(df)
        assert len((Path(r.path) / "run" / "metrics.csv").read_text().splitlines()) == 4
    model = s.best_model()  # a policy: one readout neuron per action
    spikes, _ = model(torch.zeros(1, 2, 2))
    assert spikes[-1].shape == (1, 2, 4)


def test_cli_tune_arguments_build_the_search(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("optim.lr: {choice: [0.003, 0.03]}\nes:\n  sigma: {grid: [0.02, 0.05]}\n")
    args = cli.parser().parse_args(
        ["tune", "digits-es", "trainer.epochs=2", "--space", str(f), "--samples", "3",
         "--scheduler", "median", "--search", "optuna", "--metric", "test_loss", "--mode", "min",
         "--max-concurrent", "1", "--out", str(tmp_path / "o")]
    )  # fmt: skip
    s = command.build_search(args)
    assert s.base.trainer.epochs == 2 and s.num_samples == 3 and s.max_concurrent == 1
    assert (s.metric, s.mode, s.scheduler, s.searcher) == ("test_loss", "min", "median", "optuna")
    assert set(s.space) == {"optim.lr", "es.sigma"} and s.storage_path == tmp_path / "o"
    with pytest.raises(C.ConfigError, match="optuna search cannot expand grids"):
        s._make_searcher()
    args.recipe = "digits-ess"
    with pytest.raises(C.ConfigError, match="did you mean digits-es"):
        command.build_search(args)


def test_importing_spikeopt_does_not_import_ray_and_tune_without_ray_says_how_to_install(
    tmp_path,
):
    f = tmp_path / "space.yaml"
    f.write_text("optim.lr: {choice: [0.01]}\n")
    code = textwrap.dedent(f"""
        import sys
        import spikeopt.cli, spikeopt.api, spikeopt.tune, spikeopt.dist
        assert "ray" not in sys.modules
        sys.modules["ray"] = None  # as if Ray were not installed
        sys.exit(spikeopt.cli.main(["tune", "digits-es", "--space", {str(f)!r}]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pip install 'spikeopt[ray]'" in r.stderr
