"""Distributed ES on a real local Ray: exact agreement with one process, dead actors survived."""

import csv
import itertools

import pytest
import torch

from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.dist import RayObjective, shards
from spikeopt.tasks.classification import ClassificationObjective as Classification
from spikeopt.train import outputs as io
from spikeopt.train.loop import build, train

# digits-es keeps its dropout (0.2): the masks come from the torch RNG, which must travel too.
TINY = {"es.population": 16, "es.chunk": 4, "model.hidden": [32], "encoder.steps": 4,
        "trainer.epochs": 2, "trainer.steps_per_epoch": 2, "trainer.progress": False,
        "data.batch_size": 32, "data.n_test": 100}  # fmt: skip


def test_shards_sit_on_chunk_boundaries_and_cover_the_population():
    assert shards(16, 4, 2) == [(0, 8), (8, 16)]
    assert shards(20, 4, 2) == [(0, 8), (8, 20)]  # 5 chunks: 2 + 3
    assert shards(10, 4, 8) == [(0, 4), (4, 8), (8, 10)]  # never more shards than chunks
    for pop, chunk, k in [(256, 64, 3), (18, 6, 2), (2, 2, 5)]:
        ranges = shards(pop, chunk, k)
        assert ranges[0][0] == 0 and ranges[-1][1] == pop
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert all(m0 % chunk == 0 for m0, _ in ranges)


def test_bad_worker_settings_are_config_errors():
    inner = Classification(None, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="es.workers"):
        RayObjective(inner, -1)
    with pytest.raises(ConfigError, match="es.worker_cpus"):
        RayObjective(inner, 2, cpus_per_worker=0)


def _setup():
    exp = build(api.resolve("digits-es", TINY))
    x, y = exp.data.x_train[:32], exp.data.y_train[:32]
    batch = (exp.encode(x, torch.Generator().manual_seed(1)), y)
    return exp, batch, exp.method.perturbation(3)


def test_fitness_is_bit_identical_to_one_process_and_survives_a_killed_actor(ray_local):
    exp, batch, pert = _setup()
    inner, model = exp.method.objective, exp.model
    model.train()  # dropout on: masks drawn from the torch RNG
    torch.manual_seed(7)
    local = inner.fitness(model, pert, batch)
    rng_after = torch.get_rng_state()
    remote = RayObjective(inner, 2, cpus_per_worker=0.5)
    try:
        for _ in range(2):  # the second call reuses the running actors
            torch.manual_seed(7)
            assert torch.equal(remote.fitness(model, pert, batch), local)
            assert torch.equal(torch.get_rng_state(), rng_after)  # the driver's RNG advanced too
        ray_local.kill(remote.actors[0], no_restart=True)
        torch.manual_seed(7)
        assert torch.equal(remote.fitness(model, pert, batch), local)
        assert remote.restarts == 1 and len(remote.actors) == 2
    finally:
        remote.close()


def _run(tmp_path, name, **over):
    out = tmp_path / name
    train(api.resolve("digits-es", {**TINY, **over}), out, quiet=True)
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return io.load_checkpoint(out / "checkpoint.pt")["method"]["model"], rows


def test_training_on_two_actors_matches_one_process_exactly(ray_local, tmp_path):
    exp = build(api.resolve("digits-es", {**TINY, "es.workers": 2}))
    assert isinstance(exp.method.objective, RayObjective)  # the option is wired into es
    # a composite whose weight term reads the centre's parameters: actors must track them
    loss = {"loss.terms": ["ce", "wlimit"], "loss.wlimit": 0.05}
    ref_model, ref_rows = _run(tmp_path, "local", **loss)
    model, rows = _run(tmp_path, "ray", **loss, **{"es.workers": 2, "es.worker_cpus": 0.5})
    assert ref_model.keys() == model.keys()
    assert all(torch.equal(ref_model[k], model[k]) for k in ref_model)
    for key in ("train_fit_mean", "train_fit_std", "train_fit_max", "train_loss", "test_acc"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows]


def test_control_objectives_shard_too(ray_local):
    # A gymnasium rollout objective (holds the whole Config): same returns, its `last` readable
    # (one actor keeps the test cheap; sharding itself is covered above).
    cfg = api.resolve("cartpole-lif-es", {"es.population": 16, "es.chunk": 4,
                                          "es.workers": 1, "es.worker_cpus": 0.5})  # fmt: skip
    exp = build(cfg)
    method, state = exp.method, exp.state
    remote, seeds = method.objective, [11, 12]
    assert isinstance(remote, RayObjective)
    pert = method.perturbation(0)
    try:
        local = remote.inner.fitness(state.model, pert, seeds)
        assert torch.equal(remote.fitness(state.model, pert, seeds), local)
        remote.centre(state.model, seeds)
        assert remote.last is remote.inner.last is not None
    finally:
        remote.close()


@pytest.mark.parametrize(
    "over",
    [{"method.name": "nodepert", "model.dropout": 0.0},  # per-sample losses, sharded
     {"method.name": "hybrid", "hybrid.lam": 0.5}],  # its population now goes to Ray too
)  # fmt: skip
def test_every_population_method_honours_es_workers(ray_local, tmp_path, over):
    exp = build(api.resolve("digits-es", {**TINY, **over, "es.workers": 2}))
    assert isinstance(exp.method.objective, RayObjective)
    ref_model, ref_rows = _run(tmp_path, "local", **over)
    model, rows = _run(tmp_path, "ray", **over, **{"es.workers": 2, "es.worker_cpus": 0.5})
    assert all(torch.equal(ref_model[k], model[k]) for k in ref_model)
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref_rows]
