"""The GPU path (marked ``cuda``: skipped without a GPU; bench/gpu.sh runs them on one)."""

import pytest
import torch

from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.functional.loss import Loss
from spikeopt.nn import build_model
from spikeopt.population import Perturbation, evaluate
from spikeopt.train.experiment import pick_device

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_device_that_is_not_there_is_a_clear_error():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=rf"trainer.device=cuda:{count} but this machine has"):
        pick_device(f"cuda:{count}")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="trainer.device='gpu' is out of range"):
        api.run("digits-mlp-surrogate", {"trainer.device": "gpu"})


@pytest.mark.cuda
@GPU
def test_cuda_n_names_that_gpu():
    assert pick_device("cuda:0") == torch.device("cuda:0")
    assert pick_device("auto").type == "cuda"


@pytest.mark.cuda
@GPU
def test_population_fitness_on_the_gpu_matches_the_cpu():
    torch.manual_seed(0)
    from spikeopt.config import Config

    cfg = Config()
    cfg.model.hidden = [64]
    model = build_model(cfg, (64,), 10).eval()
    x = torch.rand(32, 64)[:, None].expand(32, 8, 64)
    y = torch.randint(0, 10, (32,))
    pert = Perturbation(64, 0.05, 1, "lowrank", 0, 1)
    loss = Loss("ce_count")
    cpu = evaluate(model, pert, (x, y), loss)
    gpu = evaluate(model.cuda(), pert, (x.cuda(), y.cuda()), loss)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3)


@pytest.mark.cuda
@GPU
@pytest.mark.parametrize("recipe", ["digits-mlp-surrogate", "digits-nodepert"])
def test_a_short_run_on_the_gpu_learns(recipe):
    over = {"trainer.device": "cuda", "trainer.epochs": 2, "trainer.progress": False}
    assert api.run(recipe, over)["test_acc"] > 0.5
