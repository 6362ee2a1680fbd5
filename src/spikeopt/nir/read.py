"""``from_nir``: the spikeopt SNN a NIR graph describes (the conventions: :mod:`spikeopt.nir`)."""

from __future__ import annotations

import dataclasses
import math

import nir
import numpy as np
import torch
from torch import nn

from spikeopt.config import NeuronConfig, ResetMode
from spikeopt.nir.write import NIRError
from spikeopt.nn.layers import LIF, ConvLIF, LinearLIF, RecurrentLIF
from spikeopt.nn.models import SNN


def _uniform(a: np.ndarray, what: str, where: str) -> float:
    if not np.all(a == a.flat[0]):
        raise NIRError(f"from_nir: {where} has per-neuron {what}; spikeopt takes one value")
    return float(a.flat[0])


def _neuron(beta: np.ndarray, theta: np.ndarray, base: NeuronConfig, n: int) -> LIF:
    """A LIF population with exactly these decays and thresholds (per neuron if they vary)."""
    if not np.all((beta > 0) & (beta < 1)):
        raise NIRError("from_nir: every decay 1 - dt/tau must lie in (0, 1): tau > dt")
    b0, t0 = float(beta.flat[0]), float(theta.flat[0])
    vary_b, vary_t = bool(np.any(beta != b0)), bool(np.any(theta != t0))
    tau_m = -1 / math.log(b0)
    for _ in range(8):  # nudge tau_m by ulps until exp(-1/tau_m) is the decay exactly
        got = math.exp(-1 / tau_m)
        if got == b0:
            break
        tau_m = math.nextafter(tau_m, math.inf if got < b0 else 0.0)
    cfg = dataclasses.replace(base, tau_m=tau_m, dt=1.0, v_threshold=t0, learn_tau=vary_b,
                              learn_threshold=vary_t)  # fmt: skip
    lif = LIF(n, cfg)
    with torch.no_grad():
        if lif.tau is not None:  # float32 per neuron: nudge each until its exp(-1/tau) matches
            want = torch.from_numpy(beta.reshape(-1)).float()
            tau = (-1 / torch.log(want.double())).float()
            for _ in range(16):
                got32 = torch.exp(-1 / tau)
                tau = torch.where(got32 < want, torch.nextafter(tau, torch.tensor(math.inf)),
                                  torch.where(got32 > want, torch.nextafter(tau, torch.tensor(0.0)),
                                              tau))  # fmt: skip
            lif.tau.copy_(tau)
        if lif.threshold is not None:
            lif.threshold.copy_(torch.from_numpy(theta.reshape(-1)))
    return lif


def _population(g: nir.NIRGraph, succ: dict[str, list[str]], name: str, dt: float) -> dict:
    """Parse the neuron nodes entered at ``name``: their LIF, the node the spikes leave,
    whether it is an LI readout, a recurrent weight, and the nodes they comprise."""
    node, own = g.nodes[name], {name}
    reset: ResetMode
    thr = [s for s in succ.get(name, []) if isinstance(g.nodes[s], nir.Threshold)]
    if isinstance(node, nir.LIF):
        reset, out, theta = "zero", name, np.asarray(node.v_threshold)
        v_reset = _uniform(np.asarray(node.v_reset), "v_reset", name)
    elif isinstance(node, nir.LI):
        reset, out, v_reset = "subtract", thr[0] if thr else name, 0.0
        theta = np.asarray(g.nodes[out].threshold) if thr else np.ones_like(node.tau)
        own.add(out)
    else:
        raise NIRError(f"from_nir: node {name} ({type(node).__name__}) is not LIF or LI neurons")
    tau, r = np.asarray(node.tau, float), np.asarray(node.r, float)
    beta = 1 - dt / tau
    if not np.allclose(dt / tau * r, 1.0, rtol=1e-6):
        raise NIRError(
            f"from_nir: {name} scales its input by dt/tau*r != 1; spikeopt's neurons add the "
            "current unscaled (r = tau/dt, as to_nir and snnTorch write it)"
        )
    w_rec = None
    for s in succ.get(out, []):
        back = g.nodes[s]
        if succ.get(s) != [name]:
            continue
        if isinstance(back, nir.Scale) and thr:
            if not np.allclose(back.scale, -beta * theta, rtol=1e-6, atol=1e-9):
                raise NIRError(f"from_nir: {s} is not the subtractive reset -beta*v_threshold")
        elif isinstance(back, (nir.Linear, nir.Affine)):
            if isinstance(back, nir.Affine) and np.any(back.bias):
                raise NIRError(f"from_nir: the recurrent weights {s} have a bias")
            w_rec = back.weight
        else:
            continue
        own.add(s)
    if thr and not any(isinstance(g.nodes[s], nir.Scale) for s in own):
        raise NIRError(f"from_nir: {name} -> {out} has no reset edge (a Scale back into it)")
    base = NeuronConfig(v_rest=_uniform(np.asarray(node.v_leak), "v_leak", name),
                        v_reset=v_reset, reset=reset)  # fmt: skip
    lif = _neuron(beta, theta, base, int(np.prod(tau.shape)))
    nxt = [s for s in succ.get(out, []) if s not in own]
    if len(nxt) != 1:
        raise NIRError(f"from_nir: {out} feeds {nxt}; spikeopt networks are chains")
    return {"lif": lif, "li": isinstance(node, nir.LI) and not thr, "w_rec": w_rec,
            "next": nxt[0], "shape": tuple(int(s) for s in tau.shape)}  # fmt: skip


def _conv_layer(node: nir.Conv2d, shape: tuple[int, ...], lif: LIF, name: str) -> ConvLIF:
    w = np.asarray(node.weight)
    c_out, c_in, kh, kw = w.shape
    flat = shape[1] == 1
    want = ((1, kw), (0, kw // 2)) if flat else ((kw, kw), (kw // 2, kw // 2))
    pad = want[1] if isinstance(node.padding, str) and node.padding == "same" and kw % 2 else (
        tuple(int(p) for p in np.atleast_1d(node.padding)))  # fmt: skip
    got = ((kh, kw), pad)
    if (got != want or tuple(np.atleast_1d(node.stride)) != (1, 1) or node.groups != 1
            or tuple(np.atleast_1d(node.dilation)) != (1, 1)):  # fmt: skip
        raise NIRError(
            f"from_nir: conv {name} (kernel {got[0]}, padding {got[1]}) is not spikeopt's "
            f"stride-1 'same' convolution (kernel {want[0]}, padding {want[1]})"
        )
    layer = ConvLIF(c_in, c_out, kw, lif.cfg, "none", "none", (shape[1], shape[2]))
    layer.neuron = lif
    with torch.no_grad():
        layer.conv.weight.copy_(torch.from_numpy(w))
        assert layer.conv.bias is not None
        layer.conv.bias.copy_(torch.from_numpy(np.asarray(node.bias)))
    return layer


def from_nir(graph: nir.NIRGraph, dt: float | None = None) -> SNN:
    """The spikeopt ``SNN`` a NIR graph (as :func:`to_nir` writes them) describes.

    ``dt`` defaults to the graph's ``metadata["dt"]``.
    """
    meta = getattr(graph, "metadata", None) or {}
    step = dt if dt is not None else meta.get("dt")
    if step is None:
        raise NIRError("from_nir: the graph has no metadata['dt']; pass dt= (its time step)")
    step = float(np.asarray(step))
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    ins = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(ins) != 1 or len(succ.get(ins[0], [])) != 1:
        raise NIRError("from_nir: the graph needs one Input node feeding one node")
    shape = tuple(int(s) for s in next(iter(graph.nodes[ins[0]].input_type.values())))
    layers: list[nn.Module] = []
    flatten_at: int | None = None
    name = succ[ins[0]][0]
    while not isinstance(graph.nodes[name], nir.Output):
        node, nxt = graph.nodes[name], succ.get(name, [])
        if isinstance(node, nir.Flatten):
            flatten_at, shape, name = len(layers), (math.prod(shape),), nxt[0]
            continue
        if isinstance(node, nir.AvgPool2d):
            last = layers[-1] if layers else None
            k = tuple(int(v) for v in np.atleast_1d(node.kernel_size))
            if not (isinstance(last, ConvLIF) and last.pool == "none" and k == last.window
                    and tuple(int(v) for v in np.atleast_1d(node.stride)) == k
                    and not np.any(node.padding)):  # fmt: skip
                raise NIRError(f"from_nir: pooling {name} is not a conv layer's 2x2 (1x2) average")
            last.pool, shape, name = "avg", (shape[0], shape[1] // k[0], shape[2] // k[1]), nxt[0]
            continue
        if not isinstance(node, (nir.Conv2d, nir.Affine, nir.Linear)) or len(nxt) != 1:
            raise NIRError(
                f"from_nir: node {name} ({type(node).__name__}) is not one spikeopt reads here "
                "(Affine/Linear, Conv2d, AvgPool2d, Flatten, then LIF, LI, or LI+Threshold)"
            )
        pop = _population(graph, succ, nxt[0], step)
        layer: nn.Module
        if isinstance(node, nir.Conv2d):
            if len(shape) != 3 or flatten_at is not None:
                raise NIRError(f"from_nir: conv {name} needs a (C, H, W) input, not {shape}")
            layer = _conv_layer(node, shape, pop["lif"], name)
        else:
            w = torch.from_numpy(np.asarray(node.weight)).float()
            bias = np.asarray(node.bias) if isinstance(node, nir.Affine) else np.zeros(len(w))
            if pop["w_rec"] is not None:
                layer = RecurrentLIF(w.shape[1], w.shape[0], pop["lif"].cfg)
                with torch.no_grad():
                    layer.rec.weight.copy_(torch.from_numpy(np.asarray(pop["w_rec"])))
            else:
                layer = LinearLIF(w.shape[1], w.shape[0], pop["lif"].cfg, li=pop["li"])
            layer.neuron = pop["lif"]
            with torch.no_grad():
                layer.fc.weight.copy_(w)
                layer.fc.bias.copy_(torch.from_numpy(bias))
        if pop["li"] and not isinstance(graph.nodes[pop["next"]], nir.Output):
            raise NIRError(f"from_nir: the LI {nxt[0]} is not the last layer (the readout)")
        layers.append(layer)
        shape, name = pop["shape"], pop["next"]
    if not layers:
        raise NIRError("from_nir: the graph has no layers")
    if flatten_at is None:
        if isinstance(layers[0], ConvLIF):
            raise NIRError("from_nir: conv layers must be followed by a Flatten node")
        flatten_at = 0
    return SNN(layers, flatten_at).eval()


__all__ = ["from_nir"]
