"""The energy proxy: hand-computed SynOps / dense MACs / sparsity, NeuroBench's own metrics on
the same models and data, and the keys in a real run's metrics.csv, TensorBoard and summary."""

import csv
import json

import pytest
import snntorch as snn
import torch
from neurobench.metrics.workload import (
    ActivationSparsity,
    ActivationSparsityByLayer,
    SynapticOperations,
)
from neurobench.models import TorchModel
from torch import nn

from spikeopt import api
from spikeopt.config import Config, apply
from spikeopt.nn import build_model
from spikeopt.tasks.encoders import rate, repeat
from spikeopt.tasks.energy import Energy, fan_out, spike_count


def measure(model, x):
    """The energy summary of one forward pass of ``model`` on ``x``."""
    energy = Energy(model)
    with torch.no_grad(), energy.watch():
        spikes, _ = model(x)
    energy.add(spikes)
    return energy.summary()


class TwoLayer(nn.Module):
    """Linear(3, 2) -> step >= 1 -> Linear(2, 2) -> step >= 2, with weights set by hand."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 2, bias=False)
        self.fc2 = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
            self.fc2.weight.fill_(1.0)

    def forward(self, x):
        h = (self.fc1(x) >= 1).float()
        out = (self.fc2(h) >= 2).float()
        return [h, out], [h, out]


def test_dense_model_by_hand():
    # t0 = [1, 1, 0] -> fc1 [1, 0] -> h [1, 0] -> fc2 [1, 1] -> out [0, 0]
    # t1 = [0, 1, 1] -> fc1 [2, 3] -> h [1, 1] -> fc2 [2, 2] -> out [1, 1]
    x = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]]).repeat(2, 1, 1)  # 2 equal samples
    got = measure(TwoLayer(), x)
    # fc1: fan-out = nonzero weights per input column = [1, 0, 2]; t0 hits inputs 0, 1 -> 1,
    # t1 inputs 1, 2 -> 2. fc2: fan-out [2, 2]; h = [1, 0] -> 2, [1, 1] -> 4.
    assert got["synops/fc1"] == 3 and got["synops/fc2"] == 6
    assert got["synops_per_sample"] == got["synops_ac_per_sample"] == 9
    assert got["synops_mac_per_sample"] == 0  # every input is a spike
    assert got["dense_macs/fc1"] == 3 * 2 * 2 and got["dense_macs/fc2"] == 2 * 2 * 2
    assert got["dense_macs_per_sample"] == 20 and got["dense_macs_per_step"] == 10
    assert got["sparsity/layer0"] == 1 / 4 and got["sparsity/layer1"] == 2 / 4
    assert got["activation_sparsity"] == 3 / 8


def test_analog_inputs_are_multiply_accumulates():
    x = torch.tensor([[[0.5, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    got = measure(TwoLayer(), x)
    assert got["synops_mac_per_sample"] == 1  # 0.5 and 1.0 at t0: fan-outs 1 + 0
    assert got["synops_ac_per_sample"] == 0  # h is [0, 0] at both steps


def test_spike_count_tells_spikes_from_values_that_are_almost_spikes():
    s = (torch.rand(300, 500, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    assert spike_count(s) == float(s.sum())
    assert spike_count(-s) == float(s.sum())  # signed spikes count too, as in NeuroBench
    for odd in (0.75, 1 - 1e-4, 1e-6, 2.0, -0.5):
        t = s.clone()
        t[7, 11] = odd
        assert spike_count(t) is None, odd


def test_conv_fan_out_counts_outputs_inside_the_padding():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    f = fan_out(conv, (1, 3, 3))[0]
    # 3x3 output: the centre input reaches all 9 positions, a corner 4, an edge 6; x 2 channels
    assert f.tolist() == [[8, 12, 8], [12, 18, 12], [8, 12, 8]]
    strided = nn.Conv2d(1, 2, 3, stride=2, padding=1)
    g = fan_out(strided, (1, 4, 4))[0]
    assert g[1, 1] == 2 * 4 and g[0, 0] == 2 * 1 and g[3, 3] == 2 * 1
    # dense, per frame: each of the 4 outputs sums its in-bound taps (4 + 6 + 6 + 9), x 2
    assert float(fan_out(strided, (1, 4, 4), dense=True).sum()) == 2 * 25


class ConvNet(nn.Module):
    """Conv2d(1, 2, 3, padding 1) on 3x3 frames, spikes where the current is >= 1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x):
        b, t = x.shape[:2]
        s = (self.conv(x.flatten(0, 1)) >= 2).float().view(b, t, -1)
        return [s], [s]


def test_conv_model_by_hand():
    x = torch.zeros(1, 2, 1, 3, 3)
    x[0, 0, 0, 1, 1] = 1  # t0: the centre -> 2 channels x 9 outputs = 18
    x[0, 1, 0, 0, 0] = 1  # t1: the corner and its neighbour -> 2 x 4 + 2 x 6 = 20
    x[0, 1, 0, 0, 1] = 1
    got = measure(ConvNet(), x)
    assert got["synops/conv"] == got["synops_ac_per_sample"] == 18 + 20
    assert got["dense_macs_per_step"] == 2 * (4 * 4 + 4 * 6 + 9)  # corners, edges, centre
    # t0: every current is 1 (< 2), no spike; t1: the outputs reached by both inputs, (0, 0),
    # (0, 1), (1, 0), (1, 1), spike in both channels: 8 of 18 outputs
    assert got["sparsity/layer0"] == pytest.approx(1 - 8 / 36)


def _model(arch, **kw):
    cfg = apply(Config(), {"model.arch": arch, "model.hidden": [12], "model.channels": [3, 4],
                           "neuron.v_threshold": 0.5, **kw})  # fmt: skip
    torch.manual_seed(0)
    return build_model(cfg, (2,) if arch == "rsnn" else (1, 8, 8), n_classes=3)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_static_input_counts_every_step_as_the_materialised_repeat(arch):
    x = repeat(torch.rand(5, 1, 8, 8), 6)  # stride-0 time axis: the one-current fast path
    assert measure(_model(arch), x) == measure(_model(arch), x.contiguous())


def test_recurrent_synapses_count_the_spikes_of_the_step_before():
    model = _model("rsnn", **{"model.hidden": [7]})
    x = (torch.rand(4, 9, 2) < 0.6).float()
    got = measure(model, x)
    with torch.no_grad():
        s = model(x)[0][0]
    assert got["synops/layers.0.rec"] == float(s[:, :-1].sum()) * 7 / 4  # all 7x7 weights != 0
    assert got["dense_macs/layers.0.rec"] == 7 * 7 * 9
    assert got["dense_macs/layers.0.fc"] == 2 * 7 * 9


def _neurobench(model, x, activations=()):
    nb = TorchModel(model)
    for kind in activations:
        nb.add_activation_module(kind)
    nb.register_hooks()
    with torch.no_grad():
        preds = nb(x)
    data = (x, torch.zeros(len(x)))
    out = SynapticOperations()(nb, preds, data)
    if activations:
        out["by_layer"] = ActivationSparsityByLayer()(nb, preds, data)
        out["all"] = ActivationSparsity()(nb, preds, data)
    nb.cleanup_hooks()
    return out


@pytest.mark.parametrize(
    ("arch", "pool", "kind"),
    [("mlp", "avg", "rate"), ("mlp", "avg", "repeat"), ("conv", "avg", "rate"),
     ("conv", "max", "repeat")],
)  # fmt: skip
def test_matches_neurobench_synaptic_operations(arch, pool, kind):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(6, 1, 8, 8, generator=g)
    x = rate(images, 5, 1.0, g) if kind == "rate" else repeat(images, 5)
    ours = measure(_model(arch, **{"model.pool": pool}), x)
    # NeuroBench counts the calls it sees: give it the repeat materialised (the same spikes)
    nb = _neurobench(_model(arch, **{"model.pool": pool}), x.contiguous())
    assert ours["synops_ac_per_sample"] == pytest.approx(nb["Effective_ACs"], abs=0.5)
    assert ours["synops_mac_per_sample"] == pytest.approx(nb["Effective_MACs"], abs=0.5)
    assert ours["dense_macs_per_sample"] == nb["Dense"]
    assert ours["synops_per_sample"] > 0


class SnnTorchNet(nn.Module):
    """A textbook snnTorch two-layer Leaky net stepped over time, on the model contract."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.fc1, self.lif1 = nn.Linear(16, 10), snn.Leaky(beta=0.8)
        self.fc2, self.lif2 = nn.Linear(10, 3), snn.Leaky(beta=0.8)

    def forward(self, x):
        m1, m2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        s1s, s2s, v2s = [], [], []
        for t in range(x.shape[1]):
            s1, m1 = self.lif1(self.fc1(x[:, t]), m1)
            s2, m2 = self.lif2(self.fc2(s1), m2)
            s1s.append(s1)
            s2s.append(s2)
            v2s.append(m2)
        return [torch.stack(s1s, 1), torch.stack(s2s, 1)], [torch.stack(v2s, 1)] * 2


def test_matches_neurobench_on_a_snntorch_model_stepped_over_time():
    x = (torch.rand(8, 12, 16, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    ours = measure(SnnTorchNet(), x)
    nb = _neurobench(SnnTorchNet(), x, activations=(snn.SpikingNeuron,))
    assert ours["synops_ac_per_sample"] == nb["Effective_ACs"]
    assert ours["dense_macs_per_sample"] == nb["Dense"] == (16 * 10 + 10 * 3) * 12
    assert ours["sparsity/layer0"] == pytest.approx(nb["by_layer"]["lif1"])
    assert ours["sparsity/layer1"] == pytest.approx(nb["by_layer"]["lif2"])
    assert ours["activation_sparsity"] == pytest.approx(nb["all"])
    assert 0 < ours["sparsity/layer0"] < 1


def test_a_run_logs_the_energy_keys_everywhere(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = {"encoder.steps": 4, "model.hidden": [32], "trainer.epochs": 2,
            "trainer.steps_per_epoch": 3, "trainer.progress": False, "data.n_test": 60}  # fmt: skip
    summary = api.run("digits-mlp-surrogate", over, out=tmp_path, quiet=True)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    last = rows[-1]
    # an MLP 64 -> 32 -> 10 does 64 x 32 + 32 x 10 MACs per step, whatever its spikes
    assert float(last["dense_macs_per_step"]) == 64 * 32 + 32 * 10
    assert float(last["dense_macs_per_sample"]) == (64 * 32 + 32 * 10) * 4
    assert 0 < float(last["synops_per_sample"]) < float(last["dense_macs_per_sample"])
    assert {"synops/layers.0.fc", "synops/layers.1.fc", "sparsity/layer0"} <= set(last)
    saved = json.loads((tmp_path / "summary.json").read_text())
    for key in ("synops_per_sample", "dense_macs_per_sample", "synops/layers.1.fc"):
        assert saved[key] == summary[key] == pytest.approx(float(last[key])), key
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"synops_per_sample", "dense_macs_per_step", "synops/layers.0.fc"} <= tags
    assert [e.step for e in events.Scalars("synops_per_sample")] == [1, 2]
