"""The loop on real data: learning, outputs, exact resume, schedules and early stopping."""

import csv
import json

import pytest
import torch

from spikeopt import api
from spikeopt.config import Config, ConfigError, NeuronConfig, SchedConfig, apply
from spikeopt.train.loop import Guard, build, nonfinite_count, train
from spikeopt.train.schedules import LR_SCHEDULES, alpha_at, build_lr_scheduler
from tests.helpers import Crash, crash_after

FAST = {
    "encoder.steps": 8,
    "model.hidden": [64],
    "trainer.epochs": 3,
    "trainer.progress": False,
    "data.batch_size": 64,
}


def test_digits_learns_well_above_chance(tmp_path):
    summary = api.run("digits-mlp-surrogate", FAST, out=tmp_path / "run", quiet=True)
    assert summary["test_acc"] > 0.75  # chance is 0.10
    assert summary["iterations"] == 3 * 23


def test_outputs_are_complete_and_loadable(tmp_path):
    out = tmp_path / "run"
    summary = api.run("digits-mlp-surrogate", {**FAST, "trainer.epochs": 2}, out=out, quiet=True)
    names = {p.name for p in out.iterdir()}
    assert {
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "curves.png",
        "checkpoint.pt",
        "tb",
    } <= names
    assert not [n for n in names if n.startswith(".")]  # no temp files left behind
    saved = json.loads((out / "summary.json").read_text())
    for key in (
        "test_acc",
        "train_acc",
        "test_loss",
        "best_test_acc",
        "wall_s",
        "iterations",
        "n_params",
        "seed",
    ):
        assert saved[key] == pytest.approx(summary[key])
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {
        "lr",
        "train_loss",
        "test_acc",
        "layer0_rate",
        "layer0_dead_frac",
        "layer0_mem_var",
    } <= set(rows[0])
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and "model" in ck["method"]
    assert list((out / "tb").iterdir())
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "encoder.kind": "rate",
            "data.normalize": False,
            "sched.name": "step",
            "sched.step_size": 1,
            "model.dropout": 0.2,
        },
    ],
)
def test_resume_continues_exactly(tmp_path, extra):
    over = {**FAST, "trainer.epochs": 4, **extra}
    full = api.run("digits-mlp-surrogate", over, out=tmp_path / "full", quiet=True)
    with pytest.raises(Crash):
        api.run(
            "digits-mlp-surrogate",
            over,
            out=tmp_path / "cut",
            quiet=True,
            callbacks=[crash_after(2)],
        )
    resumed = api.run("digits-mlp-surrogate", out=tmp_path / "cut", resume=True, quiet=True)
    for key in ("test_acc", "train_acc", "test_loss", "best_test_acc", "iterations"):
        assert resumed[key] == full[key], key
    rows_full = list(csv.DictReader((tmp_path / "full" / "metrics.csv").open()))
    rows_cut = list(csv.DictReader((tmp_path / "cut" / "metrics.csv").open()))
    drop = {"wall_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_cut] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows_full
    ]


def test_resumed_tensorboard_events_hold_every_epoch_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = {**FAST, "trainer.epochs": 4, "trainer.steps_per_epoch": 2}
    with pytest.raises(Crash):
        api.run("digits-mlp-surrogate", over, out=tmp_path, quiet=True,
                callbacks=[crash_after(2)])  # fmt: skip
    api.run("digits-mlp-surrogate", out=tmp_path, resume=True, quiet=True)
    events = EventAccumulator(str(tmp_path / "tb"))  # applies the resume's purge, as TB does
    events.Reload()
    for tag in ("test/acc", "train/loss", "lr"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4], tag


def test_same_seed_same_result_other_seed_differs():
    over = {**FAST, "trainer.epochs": 1}
    a = api.run("digits-mlp-surrogate", over, quiet=True)
    b = api.run("digits-mlp-surrogate", over, quiet=True)
    c = api.run("digits-mlp-surrogate", {**over, "trainer.seed": 1}, quiet=True)
    assert a["test_loss"] == b["test_loss"] and a["test_loss"] != c["test_loss"]


def test_refuses_to_overwrite_a_run(tmp_path):
    out = tmp_path / "run"
    api.run("digits-mlp-surrogate", {**FAST, "trainer.epochs": 1}, out=out, quiet=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        api.run("digits-mlp-surrogate", {**FAST, "trainer.epochs": 1}, out=out, quiet=True)


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no config.yaml"):
        api.run("digits-mlp-surrogate", out=tmp_path, resume=True)


def test_early_stopping_threshold_and_patience():
    base = {**FAST, "trainer.epochs": 10}
    s = api.run(
        "digits-mlp-surrogate",
        {**base, "early_stop.mode": "threshold", "early_stop.threshold": 0.2},
        quiet=True,
    )
    assert s["stopped_early"] and s["epochs"] == 1
    s = api.run(
        "digits-mlp-surrogate",
        {
            **base,
            "early_stop.mode": "patience",
            "early_stop.metric": "test_loss",
            "early_stop.goal": "min",
            "early_stop.patience": 1,
            "early_stop.min_delta": 10.0,
        },
        quiet=True,
    )
    assert s["stopped_early"] and s["epochs"] == 2
    with pytest.raises(ConfigError, match="early_stop.metric 'nope'"):
        api.run(
            "digits-mlp-surrogate",
            {**base, "early_stop.mode": "patience", "early_stop.metric": "nope"},
            quiet=True,
        )


@pytest.mark.parametrize("name", LR_SCHEDULES)
def test_every_lr_schedule_builds_and_steps(name):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_scheduler(
        opt, SchedConfig(name=name, step_size=1, milestones=[1], gamma=0.5, patience=0), epochs=4
    )
    for _ in range(3):
        opt.step()
        if sched is not None:
            sched.step(1.0) if name == "plateau" else sched.step()
    assert opt.param_groups[0]["lr"] < 1.0 or name == "none"


@pytest.mark.parametrize(
    ("kind", "mid"), [("constant", 2.0), ("linear", 5.0), ("cosine", 5.0), ("exp", 4.0)]
)
def test_alpha_schedules(kind, mid):
    cfg = NeuronConfig(alpha_schedule=kind, alpha_end=8.0)
    assert alpha_at(0, 5, cfg, 2.0) == pytest.approx(2.0)
    assert alpha_at(2, 5, cfg, 2.0) == pytest.approx(mid)
    assert alpha_at(4, 5, cfg, 2.0) == pytest.approx(2.0 if kind == "constant" else 8.0)


def test_alpha_step_schedule():
    cfg = NeuronConfig(alpha_schedule="step", alpha_end=4.0, alpha_step_every=2)
    assert [alpha_at(e, 5, cfg, 2.0) for e in range(5)] == [2.0, 2.0, 3.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"data.augment": "mixup"}, "data.augment"),
        ({"trainer.device": "tpu"}, "trainer.device"),
        ({"encoder.kind": "rate", "data.normalize": True}, "data.normalize=false"),
        ({"encoder.kind": "sequence"}, "encoder.kind=repeat"),
        ({"optim.name": "lbfgs"}, "optim.name"),
        ({"optim.lr": -1.0}, "optim.lr"),
        ({"method.name": "magic"}, "method.name"),
        ({"sched.name": "linear"}, "sched.name"),
        ({"trainer.task": "regression"}, "trainer.task"),
        ({"method.name": "reinforce"}, "cannot train trainer.task=classification; use one of"),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        train(apply(Config(), {**FAST, **over}), tmp_path / "x", quiet=True)
    assert not (tmp_path / "x").exists()


def test_an_optimizer_free_method_has_no_lr_column_and_no_lr_schedule(tmp_path):
    over = {**FAST, "method.name": "cma", "model.hidden": [8], "es.population": 8,
            "trainer.epochs": 2, "trainer.steps_per_epoch": 2, "sched.name": "cosine"}  # fmt: skip
    s = api.run("digits-mlp-surrogate", over, out=tmp_path, quiet=True)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert s["iterations"] == 4 and len(rows) == 2 and "lr" not in rows[0]


def test_optimizers_and_clipping_run():
    for name in ("adam", "adamw", "sgd"):
        s = api.run(
            "digits-mlp-surrogate",
            {
                **FAST,
                "trainer.epochs": 1,
                "optim.name": name,
                "optim.clip_value": 0.5,
                "optim.clip_norm": 1.0,
                "optim.lr": 0.05 if name == "sgd" else 2e-3,
            },
            quiet=True,
        )
        assert s["test_acc"] > 0.3


def test_cnn_baseline_checks_the_pipeline():
    s = api.run("cnn-baseline", {"trainer.epochs": 3, "trainer.progress": False}, quiet=True)
    assert s["test_acc"] > 0.9


def test_recurrent_snn_learns_mnist1d_sequences():
    over = {
        "trainer.epochs": 2,
        "model.hidden": [64],
        "data.n_train": 1000,
        "data.n_test": 500,
        "data.batch_size": 50,
        "trainer.progress": False,
    }
    s = api.run("mnist1d-rsnn-surrogate", over, quiet=True)
    assert s["test_acc"] > 0.25  # chance is 0.10


def test_population_coding_and_per_class_recall(tmp_path):
    over = {
        **FAST,
        "model.neurons_per_class": 3,
        "metric.per_class_recall": True,
        "loss.name": "mse_count",
        "loss.rate_reg": 0.1,
    }
    api.run("digits-mlp-surrogate", over, out=tmp_path / "r", quiet=True)
    row = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))[-1]
    recalls = [float(row[f"recall_{c}"]) for c in range(10)]
    assert float(row["test_acc"]) > 0.5 and 0 <= float(row["test_wta_acc"]) <= 1
    assert sum(recalls) / 10 == pytest.approx(float(row["test_acc"]), abs=0.05)


def test_overfit_batch_drives_the_loss_down_on_one_fixed_batch():
    over = {**FAST, "trainer.overfit_batch": True, "trainer.steps_per_epoch": 20, "optim.lr": 0.01,
            "trainer.epochs": 2, "data.batch_size": 32, "encoder.kind": "rate",
            "data.normalize": False, "data.augment": "flip"}  # fmt: skip
    rows = []
    api.run("digits-mlp-surrogate", over, quiet=True, callbacks=[rows.append])
    exp = build(api.resolve("digits-mlp-surrogate", over))
    batches = [b.data for epoch in (0, 1) for b in exp.task.batches(epoch)]
    assert all(torch.equal(b[0], batches[0][0]) and torch.equal(b[1], batches[0][1])
               for b in batches)  # fmt: skip
    # one batch of 32, memorised: far better than the held-out test set
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert rows[-1]["train_acc"] > 0.95 > rows[-1]["test_acc"]


def test_eval_train_reports_the_whole_fixed_training_subset():
    over = {**FAST, "trainer.eval_train": True, "data.n_train": 200, "data.n_test": 100}
    rows = []
    api.run("digits-mlp-surrogate", over, quiet=True, callbacks=[rows.append])
    assert 0.1 < rows[-1]["train_eval_acc"] <= 1.0 and rows[-1]["train_eval_loss"] > 0


def test_conv_layers_read_mnist1d_as_one_dimensional_signals():
    over = {"trainer.epochs": 4, "trainer.progress": False, "model.channels": [8, 16],
            "model.hidden": [64]}  # fmt: skip
    summary = api.run("mnist1d-conv-surrogate", over, quiet=True)
    assert summary["test_acc"] > 0.35  # chance 0.10; seeds 0-1 reach 0.46-0.47, the recipe ~0.97


def test_compiled_training_follows_the_eager_run(tmp_path):
    """trainer.compile compiles model and loss as one graph (the autograd step loop, fused by
    inductor); it must take the same steps as the eager hand-written BPTT. Its evaluation
    runs eagerly under the energy hooks (tasks/energy.py), so they count the same."""
    tiny = {**FAST, "model.hidden": [16], "encoder.steps": 4, "trainer.epochs": 1}
    tiny["trainer.steps_per_epoch"] = 4
    eager = api.run("digits-mlp-surrogate", tiny, out=tmp_path / "eager", quiet=True)
    tiny["trainer.compile"] = True
    compiled = api.run("digits-mlp-surrogate", tiny, out=tmp_path / "compiled", quiet=True)
    for key in ("train_acc", "test_acc", "test_loss", "synops_per_sample", "dense_macs_per_sample"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-4), key


def test_fluct_init_fits_the_model_to_real_batches_before_training():
    # model.init=fluct: the built model's hidden free membranes sit at the target on real
    # batches (the statistics themselves are tested in tests/nn/test_init.py)
    over = {"model.init": "fluct", "trainer.epochs": 1, "trainer.progress": False}
    default, fluct = (build(api.resolve("digits-mlp-surrogate", o))
                      for o in ({**over, "model.init": "default"}, over))  # fmt: skip
    x = fluct.encode(fluct.data.x_train[:128], None)
    with torch.no_grad():
        before = default.model.layers[0].fc(x[:, 0].flatten(1))
        after = fluct.model.layers[0].fc(x[:, 0].flatten(1))
    assert not torch.allclose(before, after)  # the weights were refitted
    assert abs(float(after.mean())) < 0.1 * float(after.std())  # centred (signed input: bias)
    again = build(api.resolve("digits-mlp-surrogate", over))
    pairs = zip(fluct.model.parameters(), again.model.parameters())
    assert all(torch.equal(a, b) for a, b in pairs)  # deterministic from the seed
    with pytest.raises(ConfigError, match="model.init=fluct"):
        build(api.resolve("nav-reinforce", {"model.init": "fluct"}))


def _finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in (*model.parameters(), *model.buffers()))


def test_a_step_that_makes_weights_nonfinite_is_undone_and_stops_the_run(tmp_path, capsys):
    over = {**FAST, "optim.lr": float("inf")}
    summary = api.run("digits-mlp-surrogate", over, out=tmp_path / "run", quiet=True)
    assert summary["ok"] is False and summary["nonfinite_action"] == "stop"
    assert summary["nonfinite_steps"] == 1 and summary["nonfinite_first"]["step"] == 1
    assert summary["epochs"] == 1 and summary["stopped_early"] is True
    err = capsys.readouterr().err
    assert "left" in err and "NaN/inf" in err and "trainer.nonfinite=stop" in err
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["nonfinite_first"] == summary["nonfinite_first"]
    exp = build(api.resolve("digits-mlp-surrogate", over))  # the checkpoint holds finite weights
    exp.state = exp.method.load_state_dict(
        exp.state, torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["method"]
    )
    assert _finite(exp.model)


def test_skip_mode_undoes_each_bad_step_and_goes_on(tmp_path):
    # every step with an infinite learning rate is bad: all undone, the weights stay at init
    over = {**FAST, "optim.lr": float("inf"), "trainer.nonfinite": "skip"}
    init = build(api.resolve("digits-mlp-surrogate", over)).model.state_dict()
    out = tmp_path / "run"
    summary = api.run("digits-mlp-surrogate", over, out=out, quiet=True)
    assert summary["ok"] is True and summary["epochs"] == 3
    assert summary["nonfinite_steps"] == summary["iterations"] == 3 * 23
    exp = build(api.resolve("digits-mlp-surrogate", over))
    ck = torch.load(out / "checkpoint.pt", weights_only=True)["method"]
    exp.state = exp.method.load_state_dict(exp.state, ck)
    for k, v in exp.model.state_dict().items():
        torch.testing.assert_close(v, init[k], rtol=0, atol=0)


def test_the_guard_puts_back_weights_buffers_and_the_optimizer_state():
    exp = build(api.resolve("digits-mlp-surrogate", FAST))
    batch = next(iter(exp.task.batches(0))).data
    exp.state, _ = exp.method.step(exp.state, batch)  # Adam's moments exist now
    guard = Guard()
    guard.save(exp)
    weights = {k: v.clone() for k, v in exp.model.state_dict().items()}
    opt = exp.state.optimizer
    moments = {(id(p), k): v.clone() for p, st in opt.state.items() for k, v in st.items()}
    for group in opt.param_groups:
        group["lr"] = float("inf")
    exp.state, metrics = exp.method.step(exp.state, batch)
    assert nonfinite_count(exp, metrics) > 0
    guard.restore(exp)
    assert nonfinite_count(exp, {}) == 0
    for k, v in exp.model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    after = {(id(p), k): v for p, st in opt.state.items() for k, v in st.items()}
    assert after.keys() == moments.keys()
    for key, v in after.items():
        torch.testing.assert_close(v, moments[key], rtol=0, atol=0)


def test_a_finite_run_carries_no_nonfinite_keys(tmp_path):
    summary = api.run("digits-mlp-surrogate", {**FAST, "trainer.epochs": 1}, quiet=True)
    assert not [k for k in summary if k.startswith("nonfinite") or k == "ok"]
