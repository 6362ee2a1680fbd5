"""Distributed ES on a real local Ray: exact agreement with one process, dead actors survived."""

import csv
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spikeopt import api, watchdog
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
    # a cluster named without workers would go unused without a word
    with pytest.raises(ConfigError, match=r"es.ray_address=auto is used only .* es.workers=N"):
        build(api.resolve("digits-es", {**TINY, "es.ray_address": "auto"}))


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
    # per-sample losses, sharded; credit=noise as es.workers makes auto choose, in both runs
    [{"method.name": "nodepert", "model.dropout": 0.0, "nodepert.credit": "noise"},
     {"method.name": "nodepert", "model.dropout": 0.0, "nodepert.credit": "noise",
      "model.arch": "conv", "model.channels": [4], "model.norm": "batch",
      "nodepert.conv": "sample"},  # per-sample kernel noise, regenerated on the actors
     {"method.name": "hybrid", "hybrid.lam": 0.5}],  # its population now goes to Ray too
)  # fmt: skip
def test_every_population_method_honours_es_workers(ray_local, tmp_path, over):
    exp = build(api.resolve("digits-es", {**TINY, **over, "es.workers": 2}))
    assert isinstance(exp.method.objective, RayObjective)
    ref_model, ref_rows = _run(tmp_path, "local", **over)
    model, rows = _run(tmp_path, "ray", **over, **{"es.workers": 2, "es.worker_cpus": 0.5})
    assert all(torch.equal(ref_model[k], model[k]) for k in ref_model)
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref_rows]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A real two-node Ray cluster on this machine: `ray start --head` and a second
    `ray start --address=...`, one CPU and its own temp dir each, torn down with its process
    trees (never `ray stop`, which would also stop the suite's own local Ray)."""
    ray_bin = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    nodes = []

    def start(*args: str) -> None:
        # every per-node service port chosen free: two nodes on one machine must not share
        kinds = ("dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent",
                 "metrics-export")  # fmt: skip
        ports = [f"--{k}-port={_free_port()}" for k in kinds]
        temp = tmp_path_factory.mktemp("node")
        cmd = [str(ray_bin), "start", "--block", "--num-cpus=1", "--disable-usage-stats",
               f"--temp-dir={temp}", *ports, *args]  # fmt: skip
        nodes.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip

    def alive_nodes() -> str:
        code = (f"import ray; ray.init(address='127.0.0.1:{port}', log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()), "
                "ray.cluster_resources()['CPU'])")  # fmt: skip
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        return r.stdout.strip()

    start("--head", f"--port={port}", "--include-dashboard=false",
          f"--ray-client-server-port={_free_port()}")  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not alive_nodes().startswith("1") and time.monotonic() < deadline:
            time.sleep(0.5)
        start(f"--address=127.0.0.1:{port}")
        while (seen := alive_nodes()) != "2 2.0" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert seen == "2 2.0", f"the two-node cluster did not come up: {seen!r}"
        yield f"127.0.0.1:{port}", env
    finally:
        trees = [watchdog.descendants(p.pid) for p in nodes]
        for p in reversed(nodes):
            p.send_signal(signal.SIGTERM)
            p.wait(60)
        time.sleep(1)
        for tree in trees:
            watchdog.kill(tree)


def test_es_across_two_ray_nodes_matches_one_process(two_nodes, tmp_path):
    address, env = two_nodes
    # two actors of one CPU each on a cluster of two one-CPU nodes: one actor per node
    over = [f"{k}={v}".replace(" ", "") for k, v in TINY.items()]
    out = tmp_path / "cluster"
    args = ["run", "digits-es", *over, "es.workers=2", "es.worker_cpus=1",
            f"es.ray_address={address}", "--quiet", "--out", str(out)]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "spikeopt.cli", *args], env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    ref_model, ref_rows = _run(tmp_path, "local")
    model = io.load_checkpoint(out / "checkpoint.pt")["method"]["model"]
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert all(torch.equal(ref_model[k], model[k]) for k in ref_model)
    for key in ("train_fit_mean", "train_fit_std", "train_loss", "test_acc"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows]
