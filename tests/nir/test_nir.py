"""NIR round trips: to_nir -> nir.write -> nir.read -> from_nir, and snnTorch's import."""

import math
from pathlib import Path
from typing import Any

import nir
import pytest
import torch

from spikeopt.config import Config, apply
from spikeopt.nir import NIRError, from_nir, to_nir
from spikeopt.nn import build_model

ARCHS = {  # (overrides, one step's input shape)
    "mlp": ({"model.hidden": [32]}, (64,)),
    "mlp-zero-li": (
        {
            "model.hidden": [32],
            "neuron.reset": "zero",
            "neuron.v_reset": -0.2,
            "neuron.v_rest": 0.1,
            "model.readout": "li",
        },
        (64,),
    ),
    "mlp-image": ({"model.hidden": [24, 16], "model.readout_tau": 5.0}, (1, 8, 8)),
    "rsnn": ({"model.arch": "rsnn", "model.hidden": [32, 16]}, (64,)),
    "rsnn-zero": ({"model.arch": "rsnn", "model.hidden": [32], "neuron.reset": "zero"}, (64,)),
    "conv": ({"model.arch": "conv", "model.channels": [4, 8], "model.hidden": [16]}, (1, 8, 8)),
    "conv-nopool": (
        {"model.arch": "conv", "model.channels": [3], "model.pool": "none", "model.hidden": []},
        (2, 6, 6),
    ),
    "conv-1d": ({"model.arch": "conv", "model.channels": [4], "model.hidden": [8]}, (2, 1, 16)),
    "learnable": (
        {"model.hidden": [32], "neuron.learn_tau": True, "neuron.learn_threshold": True},
        (64,),
    ),
}


def model_and_batch(over: dict[str, Any], shape: tuple[int, ...], seed: int = 0):
    """A model with weights scaled up so every layer spikes, and a batch of input spikes."""
    torch.manual_seed(seed)
    model = build_model(apply(Config(), over), shape, 10).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.rand_like(p)) if name.endswith(("tau", "threshold")) else p.mul_(3.0)
    x = (torch.rand(16, 20, *shape) < 0.3).float()
    return model, x


def through_file(graph: nir.NIRGraph, tmp_path: Path) -> nir.NIRGraph:
    nir.write(tmp_path / "m.nir", graph)
    return nir.read(tmp_path / "m.nir")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_round_trip_is_exact(arch: str, tmp_path: Path) -> None:
    """Every layer's spikes and membranes come back bit for bit, through an HDF5 file."""
    over, shape = ARCHS[arch]
    model, x = model_and_batch(over, shape)
    back = from_nir(through_file(to_nir(model, 1e-3, shape), tmp_path))
    with torch.no_grad():
        (s1, v1), (s2, v2) = model(x), back(x)
    assert all(0.01 < float(s.mean()) < 0.9 for s in s1[:-1])  # a test with spikes in it
    for a, b in zip([*s1, *v1], [*s2, *v2]):
        assert torch.equal(a, b)


def test_time_step_convention() -> None:
    """tau = dt / (1 - beta), r = tau / dt, v_leak = v_rest; a subtractive reset is an LI,
    a Threshold and a Scale(-beta * v_threshold) fed back into the LI."""
    over = {"model.hidden": [8], "neuron.tau_m": 10.0, "neuron.v_rest": 0.25,
            "neuron.v_threshold": 0.5}  # fmt: skip
    model, _ = model_and_batch(over, (4,))
    g = to_nir(model, 1e-3)
    beta = math.exp(-1 / 10.0)
    li, spike, reset = g.nodes["0.li"], g.nodes["0.spike"], g.nodes["0.reset"]
    assert isinstance(li, nir.LI) and isinstance(spike, nir.Threshold)
    assert li.tau == pytest.approx(1e-3 / (1 - beta), rel=1e-12)
    assert li.r == pytest.approx(li.tau / 1e-3, rel=1e-12)
    assert (li.v_leak == 0.25).all() and (spike.threshold == 0.5).all()
    assert reset.scale == pytest.approx(-beta * 0.5)
    assert {("0.li", "0.spike"), ("0.spike", "0.reset"), ("0.reset", "0.li")} <= set(g.edges)
    assert g.metadata["dt"] == 1e-3
    zero = to_nir(model_and_batch({**over, "neuron.reset": "zero"}, (4,))[0], 1e-3)
    assert isinstance(zero.nodes["0.lif"], nir.LIF) and (zero.nodes["0.lif"].v_reset == 0).all()


def test_batch_norm_is_folded_into_the_conv(tmp_path: Path) -> None:
    """Batch norm (running statistics) becomes the conv's weights and bias: the same maths
    rounded differently, so membranes agree to float precision and spikes on this batch."""
    over = {"model.arch": "conv", "model.channels": [4], "model.norm": "batch",
            "model.hidden": [16]}  # fmt: skip
    model, x = model_and_batch(over, (1, 8, 8))
    bn = model.layers[0].bn
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2.0)
    back = from_nir(through_file(to_nir(model, 1e-3), tmp_path))
    with torch.no_grad():
        (s1, v1), (s2, v2) = model(x), back(x)
    assert back.layers[0].bn is None
    torch.testing.assert_close(v1[0], v2[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(s1[-1], s2[-1])


def snntorch_spikes(graph: nir.NIRGraph, x: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """Output spikes (B, T, N) of snnTorch's import of ``graph``, stepped through time."""
    from snntorch.import_nir import import_from_nir
    from snntorch.utils import reset

    net = import_from_nir(graph)
    samples = x.split(1) if per_sample else [x]
    out = []
    with torch.no_grad():
        for xb in samples:
            reset(net)  # its Leaky neurons keep their membranes between calls
            state, steps = None, []
            for t in range(xb.shape[1]):
                s, state = net(xb[0, t] if per_sample else xb[:, t], state)
                steps.append(s.reshape(len(xb), -1))
            out.append(torch.stack(steps, 1))
    return torch.cat(out)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_snntorch_import_gives_the_same_spikes(arch: str) -> None:
    """snnTorch 1.0's ``import_from_nir`` reproduces the output spikes of a zero-reset,
    LIF-readout network exported with dt = 1e-4 (the step its importer assumes).

    The nearest case that matches, because snnTorch's importer (read in its installed
    source) always builds reset-to-zero ``Leaky`` neurons with ``v_leak = 0``, has no LI or
    Threshold/Scale node (our LI readout and subtractive reset), and routes a recurrent
    subgraph's input through the recurrent weights (``(input, w_rec)`` in
    ``_create_rnn_subgraph``), so no recurrent net matches. Its ``Flatten`` applies NIR's
    batch-free ``start_dim=0`` to batched tensors, so the conv net runs one sample at a time.
    """
    over, shape = ARCHS[arch]
    model, x = model_and_batch({**over, "neuron.reset": "zero"}, shape)
    with torch.no_grad():
        ours = model(x)[0][-1]
    theirs = snntorch_spikes(to_nir(model, 1e-4, shape), x, per_sample=arch == "conv")
    assert 0.01 < float(ours.mean()) < 0.9
    assert torch.equal(ours, theirs)


def test_what_nir_cannot_express() -> None:
    """Max pooling, the non-spiking cnn baseline and a bad dt are refused, naming the fix."""
    maxpool, _ = model_and_batch({"model.arch": "conv", "model.channels": [2], "model.pool": "max",
                                  "model.hidden": []}, (1, 4, 4))  # fmt: skip
    with pytest.raises(NIRError, match="model.pool=avg"):
        to_nir(maxpool, 1e-3)
    cnn, _ = model_and_batch({"model.arch": "cnn", "model.channels": [2]}, (1, 4, 4))
    with pytest.raises(NIRError, match="not a spikeopt SNN"):
        to_nir(cnn, 1e-3)
    mlp, _ = model_and_batch({"model.hidden": [4]}, (3,))
    for dt in (0.0, -1.0, math.nan):
        with pytest.raises(NIRError, match="dt must be a positive"):
            to_nir(mlp, dt)


def test_graphs_spikeopt_cannot_rebuild() -> None:
    """A graph without dt, with an input gain other than 1, or not a chain is refused."""
    mlp, _ = model_and_batch({"model.hidden": [4], "neuron.reset": "zero"}, (3,))
    g = to_nir(mlp, 1e-3)
    g.metadata = {}
    with pytest.raises(NIRError, match="pass dt="):
        from_nir(g)
    g = to_nir(mlp, 1e-3)
    g.nodes["0.lif"].r = g.nodes["0.lif"].r * 2
    with pytest.raises(NIRError, match="dt/tau\\*r != 1"):
        from_nir(g)
    g = to_nir(mlp, 1e-3)
    g.edges.append(("0.fc", "output"))
    with pytest.raises(NIRError, match="chain|one spikeopt reads"):
        from_nir(g)
