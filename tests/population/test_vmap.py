"""The vmap fallback for any nn.Module: equals a member loop; random ops 'same' or 'different'."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from spikeopt.config import Config, ConfigError, apply
from spikeopt.functional.loss import make_loss
from spikeopt.nn import build_model
from spikeopt.population import Perturbation, evaluate, materialize, supports


class Net(nn.Module):
    """A non-spiking module with a (B, T, N) output, optionally a random op and batch norm."""

    def __init__(self, noisy: bool = False, norm: bool = False):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3) if norm else None
        self.noisy = noisy

    def forward(self, x):
        out = self.fc(x)  # (B, T, 3)
        if self.bn is not None:
            out = self.bn(out.transpose(1, 2)).transpose(1, 2)
        if self.noisy:  # a random op whose draw dominates the loss
            out = 1e-6 * out + torch.rand_like(out)
        return [out], [out]


def _loss(spikes, mems, y):
    return spikes[-1].pow(2).mean((-3, -2, -1)), None


def _batch():
    torch.manual_seed(0)
    return torch.randn(8, 5, 4), torch.zeros(8, dtype=torch.long)


@pytest.mark.parametrize("norm", [False, True])
def test_vmap_fitness_equals_member_loop(norm):
    model, batch = Net(norm=norm), _batch()
    assert not supports(model)
    pert = Perturbation(population=6, sigma=0.2, rank=2)
    running = None if model.bn is None else model.bn.running_mean.clone()
    fitness = evaluate(model, pert, batch, _loss, chunk=4)
    if running is not None:  # each member updated its own copy of the buffers
        assert torch.equal(model.bn.running_mean, running)
    for m in range(6):
        with torch.no_grad():
            spikes, mems = functional_call(model, materialize(model, pert, m), (batch[0],))
        assert fitness[m].item() == pytest.approx(-_loss(spikes, mems, None)[0].item(), rel=1e-5)


def test_randomness_same_gives_every_member_the_same_draw():
    model, batch = Net(noisy=True), _batch()
    fitness = evaluate(model, Perturbation(8, 0.1), batch, _loss, chunk=2, randomness="same")
    assert fitness.max() - fitness.min() < 1e-4  # one draw across members and chunks


def test_randomness_different_gives_every_member_its_own_draw():
    model, batch = Net(noisy=True), _batch()
    fitness = evaluate(model, Perturbation(8, 0.1), batch, _loss, chunk=4, randomness="different")
    assert fitness.unique().numel() == 8


def test_randomness_must_be_named():
    with pytest.raises(ConfigError, match="same, different"):
        evaluate(Net(), Perturbation(2, 0.1), _batch(), _loss, randomness="error")


def test_the_non_spiking_baseline_is_untouched_by_a_vmapped_population():
    cfg = apply(Config(), {"model.arch": "cnn", "model.hidden": [8], "loss.name": "ce_mean"})
    model = build_model(cfg, (1, 8, 8), 10)
    loss = make_loss(cfg.loss, 1)
    x, y = torch.rand(4, 1, 1, 8, 8), torch.randint(0, 10, (4,))
    model.eval()
    before = model(x)[0][-1]
    fitness = evaluate(model, Perturbation(4, 0.1), (x, y), loss)
    assert torch.isfinite(fitness).all()
    torch.testing.assert_close(model(x)[0][-1], before)  # no batched tensor left behind


class Wrapped(nn.Module):
    """A custom container around spikeopt's own SNN: not a built-in, so vmap runs it."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize(
    "arch",
    [{"model.hidden": [16]},
     {"model.arch": "rsnn", "model.hidden": [12], "model.readout": "li", "loss.name": "ce_max"}],
)  # fmt: skip
def test_custom_module_of_spikeopt_neurons_runs_under_vmap(arch):
    cfg = apply(Config(), arch)
    torch.manual_seed(0)
    model = Wrapped(build_model(cfg, (1, 8, 8), 10)).double()
    loss = make_loss(cfg.loss, 1)
    x = (torch.rand(6, 5, 1, 8, 8, dtype=torch.float64) < 0.4).double()
    y = torch.randint(0, 10, (6,))
    assert not supports(model)
    pert = Perturbation(population=6, sigma=0.1, rank=2)
    fitness = evaluate(model, pert, (x, y), loss, chunk=4)
    expected = []
    for m in range(6):
        with torch.no_grad():
            spikes, mems = functional_call(model, materialize(model, pert, m), (x,))
        expected.append(-loss(spikes, mems, y)[0])
    torch.testing.assert_close(fitness, torch.stack(expected), rtol=1e-9, atol=1e-9)
    assert fitness.unique().numel() > 1


class OldStyleStep(torch.autograd.Function):
    """A surrogate spike written the old way (``forward(ctx, ...)``): vmap cannot run it."""

    @staticmethod
    def forward(ctx, v):  # type: ignore[override]
        ctx.save_for_backward(v)
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad / (1 + v.abs()) ** 2


class OldStyleNet(nn.Module):
    """A user LIF layer whose spike is an old-style autograd.Function."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        v, spikes, mems = torch.zeros(x.shape[0], 3), [], []
        for t in range(x.shape[1]):
            v = 0.9 * v + self.fc(x[:, t])
            s = OldStyleStep.apply(v - 0.5)
            v = v - s * 0.5
            spikes.append(s)
            mems.append(v)
        return [torch.stack(spikes, 1)], [torch.stack(mems, 1)]


def _member_loop(model, pert, batch, loss):
    out = []
    for m in range(pert.population):
        with torch.no_grad():
            spikes, mems = functional_call(model, materialize(model, pert, m), (batch[0],))
        out.append(-loss(spikes, mems, batch[1])[0])
    return torch.stack(out)


def _mem_loss(spikes, mems, y):
    return mems[-1].pow(2).mean((-3, -2, -1)) + spikes[-1].mean((-3, -2, -1)), None


def test_an_old_style_autograd_function_runs_its_members_one_by_one():
    torch.manual_seed(0)
    model, batch = OldStyleNet(), _batch()
    pert = Perturbation(population=6, sigma=0.3, rank=2)
    fitness = evaluate(model, pert, batch, _mem_loss, chunk=4)  # vmap refuses; the loop runs
    torch.testing.assert_close(fitness, _member_loop(model, pert, batch, _mem_loss).to(fitness))
    assert fitness.unique().numel() > 1


def test_snntorch_neurons_run_under_vmap_with_their_surrogate_restored():
    snn = pytest.importorskip("snntorch")
    from snntorch import surrogate

    class Leaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.lif = nn.Linear(4, 3), snn.Leaky(0.9, spike_grad=surrogate.atan())

        def forward(self, x):
            mem, spikes, mems = self.lif.init_leaky(), [], []
            for t in range(x.shape[1]):
                spk, mem = self.lif(self.fc(x[:, t]), mem)
                spikes.append(spk)
                mems.append(mem)
            return [torch.stack(spikes, 1)], [torch.stack(mems, 1)]

    torch.manual_seed(0)
    model, batch = Leaky(), _batch()
    grad_fn = model.lif.spike_grad
    pert = Perturbation(population=6, sigma=0.3, rank=2)
    fitness = evaluate(model, pert, batch, _mem_loss, chunk=4)
    from spikeopt.population.vmap import _LOOPED

    assert model not in _LOOPED  # vmap ran it: the surrogate was swapped for its forward
    assert model.lif.spike_grad is grad_fn
    torch.testing.assert_close(fitness, _member_loop(model, pert, batch, _mem_loss).to(fitness))
    assert fitness.unique().numel() > 1
