"""Node perturbation: zeroth-order learning with per-sample credit, on hard spikes.

Members perturb the synaptic *currents* of the network's layers instead of its weights
(Williams 1992; Fiete & Seung 2006, "Gradient learning in spiking neural networks by
dynamic perturbation of conductances"; Dalm et al. 2023, node perturbation with
decorrelation; the same idea drives OPZO, Xiao et al. 2024). With ``I_l`` the current of
layer ``l`` on the shared batch, member pair ``k`` runs ``I_l +- sigma_l xi_{k,l}``; every
sample ``b`` has its own draw, and its own loss difference credits it::

    c_{m,b}   = loss_b(member m) + B * shared_m        per-sample loss (shared: rate terms)
    d_{k,b}   = c_{2k,b} - c_{2k+1,b}                  antithetic difference, per sample
    G_{l,b}   = 1/(B P sigma_l) sum_k d_{k,b} xi_{k,l,b}    ~ d loss / d I_{l,b}
    dW_l      = G_l (x) input_l                        the current's own Jacobian: outer
                                                       product with the presynaptic input

That is ``credit=noise``. ``credit=activity`` regresses instead on what each pair
*measured*: with ``D_{k,l,b} = (I_l(2k) - I_l(2k+1)) / 2`` the change of layer ``l``'s whole
current between the pair's members (its own noise plus what the noise of earlier layers
did to its input), ``G_{l,b}`` is the per-sample ridge least-squares solution of
``d_{k,b} / 2 ~ G_{l,b} . D_{k,l,b}`` over the K pairs (:func:`least_squares`; Dalm et al.
2023's activity-based node perturbation, solved per sample). The earlier layers' noise then
stops being noise in the later layers' estimates, and on a readout of N <= K currents the
solve recovers the per-sample gradient almost exactly (cosine with the surrogate gradient on
the CIFAR-10 subset net: readout 0.78 -> 0.98, second conv 0.04 -> 0.09, same members). It
keeps the pairs' current changes, K x B x neurons values per layer, in the process: with
``es.workers`` use ``credit=noise``. The default, ``credit=auto``, picks activity credit for
dense and recurrent nets of up to 128 members run in this process and noise credit otherwise
(:func:`credit_for`: on the conv nets activity credit trained worse, on digits better).
``credit=mixed`` takes activity credit on the dense and recurrent layers and noise credit on
the conv layers (on both conv nets measured it trained no better than noise credit, although
its readout estimate was nearly exact: the conv layers' estimates limit them).

The base pass and every member share weights, batch, encoder noise and dropout masks (common
random numbers); the presynaptic input is the base pass's. Held noise (``nodepert.noise=held``,
one draw per sample held over the sequence) estimates ``sum_t dL/dI_t`` and pairs it with the
input's mean over time (exact for the first layer of a static input, a rate approximation
deeper); ``step`` draws per step (unbiased, but T times the dimension). Either way the
estimated dimension is neurons x (steps) per sample, not weights, and every sample is its own
estimate -- B of them per member instead of one. No backward pass through time and no
surrogate: the members run the hard-threshold network.

Conv layers share each kernel over every position, so their node noise has far more
dimensions than their weights (the CIFAR-10 subset net's first conv: 8 x 32 x 32 currents per
sample against 216 weights). ``nodepert.conv=sample`` gives them per-sample *parameter* noise
instead: sample ``b`` of member ``m`` runs the layer with its own kernel, bias and batch norm
affine ``theta + s_m sigma * xi_{k,b}``, credited by its own loss difference exactly like node
noise (per-sample weight perturbation: the estimated dimension is the layer's parameters, B
estimates per member), with each tensor's sigma chosen to move the current by as much as node
noise would (:func:`kernel_sigmas`). ``conv=auto`` takes it where the kernel has fewer weights
than the layer's current has values per sample, node noise elsewhere; ``conv=node`` noises
every conv current; ``conv=weight`` gives conv layers low-rank ES weight noise (``es.sigma``,
``es.rank``) in the same members, estimated from the members' total loss as ES does. Where
measured (docs/benchmarks.md): the first conv's estimate 3-4x closer to the gradient in norm,
the second conv no better.
``sigma_l`` is ``nodepert.sigma`` times the std of the layer's
current on the batch (``sigma_mode=relative``, so one value suits every layer and dataset)
or ``nodepert.sigma`` itself (``absolute``).
``nodepert.block=b`` draws a conv layer's node noise once per channel and b x b block of
positions and credits each position with its block's mean (:func:`grid`): b^2 fewer
dimensions per sample, bought with a bias; it trained worse on MNIST-1D, so the default is 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from spikeopt.config import Config, ConfigError, check_choices
from spikeopt.methods.base import TrainState
from spikeopt.methods.es import ES
from spikeopt.methods.strategy import Generation, Strategy, check_sigma, sigma_at
from spikeopt.nn.layers import ConvLIF, LinearLIF, RecurrentLIF, is_static
from spikeopt.population import (
    PAIRS_PER_BLOCK,
    NodeNoise,
    NodePerturbation,
    Perturbation,
    block_sizes,
    coarse,
    estimate,
    layer_params,
    split_pairs,
    supports,
)

SIGMA_MODES: tuple[str, ...] = ("relative", "absolute")
NOISE: tuple[str, ...] = ("held", "step")
CONV: tuple[str, ...] = ("weight", "node", "sample", "auto")
SPLIT: tuple[str, ...] = ("joint", "layer")
CREDIT: tuple[str, ...] = ("auto", "activity", "noise", "mixed")
# credit=auto takes activity credit up to this population: beyond it the pairs' recorded
# current changes and the per-sample solve cost more than they return (P = 512 on the
# reference net: 0.55x the members/s of noise credit, 294 MiB; P = 4096: 1.3 GB)
ACTIVITY_MAX_POPULATION = 128


def layers_of(model: nn.Module) -> nn.ModuleList:
    """The layers of a built-in SNN, in order."""
    layers = model.layers
    assert isinstance(layers, nn.ModuleList), "a model built from spikeopt layers (SNN)"
    return layers


def node_layers(model: nn.Module, conv: str) -> list[int]:
    """Indices of the layers credited sample by sample: dense and recurrent layers, and conv
    layers unless ``conv == 'weight'`` (their currents or, per :func:`kernel_positions`, their
    kernels take the per-sample noise)."""
    kinds: tuple[type, ...] = (LinearLIF, RecurrentLIF) + (() if conv == "weight" else (ConvLIF,))
    return [i for i, layer in enumerate(layers_of(model)) if type(layer) in kinds]


def kernel_positions(model: nn.Module, layers: list[int], conv: str) -> tuple[int, ...]:
    """Positions in ``layers`` whose conv kernels take per-sample kernel noise: every conv layer
    for ``conv == 'sample'``; for ``auto`` those whose kernel has fewer weights than their
    current has values per sample (a kernel shared over every position: the per-sample
    estimate of W has fewer dimensions than that of the current it drives). A constrained
    kernel (``hw.*``: quantised, signed) keeps node noise, so every member runs it exactly."""
    if conv not in ("sample", "auto"):
        return ()
    out = []
    for j, i in enumerate(layers):
        layer = layers_of(model)[i]
        if isinstance(layer, ConvLIF) and not parametrize.is_parametrized(layer.conv):
            values = layer.conv.out_channels * math.prod(layer.hw)  # currents per sample
            if conv == "sample" or layer.conv.weight.numel() < values:
                out.append(j)
    return tuple(out)


def synapses(layer: nn.Module) -> list[nn.Parameter]:
    """The parameters of a layer's current (what node perturbation estimates)."""
    parts: list[nn.Module] = []
    if isinstance(layer, (LinearLIF, RecurrentLIF)):
        parts = [layer.fc, layer.rec] if isinstance(layer, RecurrentLIF) else [layer.fc]
    if isinstance(layer, ConvLIF):
        parts = [layer.conv] + ([layer.bn] if layer.bn is not None else [])
    return [p for m in parts for p in m.parameters() if p.requires_grad]


def kernel_sigmas(layer: ConvLIF, h: Tensor, sigma: float, relative: bool) -> tuple[float, ...]:
    """Per-sample parameter noise stds of a conv layer, one per tensor of
    :func:`~spikeopt.population.node.layer_params`, each moving the layer's current by
    ``sigma`` times its std on ``h`` (``relative``; else ``sigma`` current units): a kernel
    change of std s moves each output by s times its input patch's norm (so s is the target
    over the patches' rms norm), a bias or batch norm shift moves it by s, a batch norm scale
    by s times the normalised current (std 1)."""
    conv, bn = layer.conv, layer.bn
    x = h[:, 0] if is_static(h) else h.flatten(0, 1)
    ones = x.new_ones(1, *conv.weight.shape[1:])
    patch = float(F.conv2d(x.square(), ones, None, conv.stride, conv.padding, conv.dilation)
                  .mean().sqrt())  # fmt: skip
    z = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation)
    pre = float(z.std()) if relative else 1.0  # the conv's output, before batch norm
    post = pre
    if bn is not None and relative:
        post = float(F.batch_norm(z, None, None, bn.weight, bn.bias, True, 0.0, bn.eps).std())
    pre, post = (v if v > 0 else 1.0 for v in (pre, post))
    out = []
    for p in layer_params(layer):
        if p is conv.weight:
            out.append(sigma * pre / (patch if patch > 0 else 1.0))
        else:
            out.append(sigma * (pre if p is conv.bias else post))
    return tuple(out)


def current(layer: nn.Module, h: Tensor, spikes: Tensor, held: bool) -> Tensor:
    """A layer's current from its input ``h`` (B, T, ...) and its own spikes (recurrence):
    over the time-mean input (B, N) when ``held``, else every step (B, T, N). Batch norm uses
    the batch's statistics and leaves the running ones alone."""
    b, steps = h.shape[:2]
    x = (h[:, 0] if is_static(h) else h.mean(1)) if held else h
    if isinstance(layer, ConvLIF):
        frames = x if held else x.flatten(0, 1)
        z: Tensor = layer.conv(frames)
        if layer.bn is not None:
            bn = layer.bn
            z = F.batch_norm(z, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        return z.flatten(1) if held else z.view(b, steps, -1)
    assert isinstance(layer, (LinearLIF, RecurrentLIF))
    out: Tensor = layer.fc(x)
    if isinstance(layer, RecurrentLIF):  # I[t] = W x[t] + V s[t-1], s[-1] = 0
        prev = F.pad(spikes[:, :-1], (0, 0, 1, 0))
        out = out + layer.rec(prev.sum(1) / steps if held else prev)
    return out


@contextmanager
def capture(model: nn.Module, layers: list[int]) -> Iterator[dict[int, tuple[Tensor, Tensor]]]:
    """Record the input (B, T, ...) and spikes of each listed layer while the block runs."""
    seen: dict[int, tuple[Tensor, Tensor]] = {}
    handles = []
    for i in layers:

        def hook(_: nn.Module, args: tuple[Any, ...], out: Any, i: int = i) -> None:
            seen[i] = (args[0].detach(), out[0].detach())

        handles.append(layers_of(model)[i].register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class NodePert(Strategy):
    """Node perturbation with per-sample credit on the batched population path.

    Metrics beyond :class:`~spikeopt.methods.strategy.Strategy`'s: ``node_sigma_<i>`` (the
    current noise std of layer ``i``), ``sigma`` (the weight noise of the other parameters,
    when there are any).
    """

    name = "nodepert"
    tasks = ("classification",)
    sections = ("es", "nodepert")

    def check(self, cfg: Config) -> None:
        """The nodepert.* choices, the population, the weight noise and a per-sample loss."""
        n = cfg.nodepert
        weight_terms = [t for t in cfg.loss.terms if t in ("magnitude", "topology")]
        if weight_terms:
            raise ConfigError(
                f"method.name=nodepert with loss.terms {', '.join(weight_terms)}: its members "
                "share the centre's weights, so a weight term is the same for all of them and "
                "steers nothing; use method.name=surrogate, es, snes, cma, hybrid or guided-es"
            )
        check_choices(n)
        if not (math.isfinite(n.sigma) and n.sigma > 0):
            raise ConfigError(f"nodepert.sigma must be a finite number > 0, got {n.sigma}")
        if cfg.es.population < 2 or cfg.es.population % 2:
            raise ConfigError(
                f"es.population must be even and >= 2 (antithetic pairs), got {cfg.es.population}"
            )
        check_sigma(cfg.es)
        self.credit: str = n.credit  # auto is resolved against the model in start()
        if n.credit in ("activity", "mixed") and cfg.es.workers:
            raise ConfigError(
                f"nodepert.credit={n.credit} reads every member's currents, which stay on the "
                "process that ran them; with es.workers > 0 set nodepert.credit=noise (or run "
                "in this process: es.workers=0)"
            )
        if n.block < 1:
            raise ConfigError(f"nodepert.block must be an integer >= 1, got {n.block}")
        if not (math.isfinite(n.ridge) and n.ridge > 0):
            raise ConfigError(f"nodepert.ridge must be a finite number > 0, got {n.ridge}")
        if self.loss is not None and not hasattr(self.loss, "per_sample"):
            raise ConfigError(
                "method.name=nodepert credits every sample by its own loss: the loss needs a "
                "per_sample(spikes, mems, y) method (the built-in losses have one)"
            )

    def start(self, model: nn.Module, cfg: Config) -> dict[str, Any]:
        """Refuse models off the batched path, or with no layer to perturb."""
        if not supports(model):
            raise ConfigError(
                "method.name=nodepert needs a model built from spikeopt layers (model.arch mlp "
                "| conv | rsnn); use method.name=es for other models"
            )
        if not node_layers(model, cfg.nodepert.conv):
            raise ConfigError("method.name=nodepert found no dense or recurrent layer to perturb")
        convs = [layer for layer in layers_of(model) if isinstance(layer, ConvLIF)]
        if cfg.nodepert.conv == "sample" and any(
            parametrize.is_parametrized(c.conv) for c in convs
        ):
            raise ConfigError(
                "nodepert.conv=sample perturbs float kernels sample by sample, but this model's "
                "conv kernels are constrained (hw.*: quantised or signed); use nodepert.conv=auto "
                "or node (their currents take node noise, every member runs the exact kernels) "
                "or weight"
            )
        self.credit = credit_for(model, cfg)
        return {}

    passes = ES.passes  # the base pass and every member forward (+ BPTT on cosine steps)

    def centre(self, state: TrainState, gen: Generation) -> None:
        """The base pass: centre metrics, and every node layer's input and spikes."""
        gen.rng = torch.get_rng_state()  # the members draw the same dropout masks
        layers = node_layers(state.model, self.cfg.nodepert.conv)
        with capture(state.model, layers) as seen:
            super().centre(state, gen)
        gen.aux = {"layers": layers, "seen": seen}

    def ask(self, state: TrainState, gen: Generation) -> NodePerturbation:
        """Current noise on the node layers, scaled per layer; weight noise on the rest."""
        n, e, model = self.cfg.nodepert, self.cfg.es, state.model
        held = n.noise == "held"
        layers, seen = gen.aux["layers"], gen.aux["seen"]
        kernels = kernel_positions(model, layers, n.conv)
        relative = n.sigma_mode == "relative"
        sigmas: list[float] = []
        shapes: list[tuple[int, ...]] = []
        per: list[tuple[float, ...]] = []
        with torch.no_grad():
            for j, i in enumerate(layers):
                h, s = seen[i]
                layer = layers_of(model)[i]
                if j in kernels:  # one draw per sample, held (as the parameters are)
                    per.append(kernel_sigmas(layer, h, n.sigma, relative))
                    sigmas.append(1.0)  # the per-tensor sigmas scale it
                    shapes.append((h.shape[0], sum(p.numel() for p in layer_params(layer))))
                    gen.metrics[f"kernel_sigma_{i}"] = per[-1][0]
                    continue
                z = current(layer, h, s, held)
                scale = float(z.std()) if relative else 1.0
                sigmas.append(n.sigma * (scale if scale > 0 else 1.0))
                shapes.append(tuple(z.shape) if held else (z.shape[1], z.shape[0], z.shape[2]))
                gen.metrics[f"node_sigma_{i}"] = sigmas[-1]
        node_params = {id(p) for i in layers for p in synapses(layers_of(model)[i])}
        rest = tuple(j for j, p in enumerate(gen.params) if id(p) not in node_params)
        weights = None
        if rest:
            sigma = sigma_at(state.step, e)
            weights = Perturbation(
                e.population, sigma, e.rank, e.mode, self.seed, state.step, e.table_size
            )
            gen.metrics["sigma"] = sigma
        grids = tuple(() if j in kernels else grid(layers_of(model)[i], n.block)
                      for j, i in enumerate(layers))  # fmt: skip
        assign: tuple[int, ...] = ()
        if n.split == "layer":  # each pair perturbs one layer: no other layer's noise in its
            dims = [math.prod(s[:-2]) * (coarse(g) if g else s[-1]) for s, g in zip(shapes, grids)]
            assign = split_pairs(e.population // 2, dims)
        recorded = tuple(j for j in recorded_layers(model, layers, self.credit) if j not in kernels)
        return NodePerturbation(e.population, tuple(layers), tuple(sigmas), tuple(shapes),
                                self.seed, state.step, weights, rest, assign, recorded,
                                grids if any(grids) else (), kernels, tuple(per))  # fmt: skip

    def evaluate(self, state: TrainState, gen: Generation) -> Tensor:
        """Every member's per-sample losses (forked RNG: the base pass's dropout masks)."""
        spec: NodePerturbation = gen.source
        activity: list[Tensor] | None = [] if spec.recording() else None
        with self.replayed(gen):
            samples, shared = self.objective.sample_losses(  # type: ignore[attr-defined]
                state.model, gen.source, gen.batch, activity
            )
        gen.aux["losses"], gen.aux["activity"] = (samples, shared), activity
        return -(samples.mean(1) + shared)

    def tell(self, state: TrainState, gen: Generation) -> list[Tensor]:
        """Per-sample credit through each node layer's current; ES for the other weights."""
        spec: NodePerturbation = gen.source
        model, held = state.model, self.cfg.nodepert.noise == "held"
        samples, shared = gen.aux["losses"]
        diff = pair_differences(samples, shared)  # (K, B)
        batch = samples.shape[1]
        # ~ d loss_b / d I_b from what each pair measured where recorded, else from the noise
        recorded = dict(zip(spec.recording(), gen.aux["activity"] or ()))
        ridge = self.cfg.nodepert.ridge
        noise = self._noise_credit(model, gen, diff) if len(recorded) < len(spec.layers) else []
        cur_grads = [least_squares(diff / 2, recorded[j], ridge) / batch if j in recorded
                     else noise[j] for j in range(len(spec.layers))]  # fmt: skip
        grads: dict[int, Tensor] = {}
        for j, (i, g) in enumerate(zip(spec.layers, cur_grads)):
            layer = layers_of(model)[i]
            if j in spec.kernels:  # per-sample parameter estimates: their sum is the batch's
                ps = layer_params(layer)
                for p, gp in zip(ps, g.sum(0).split([p.numel() for p in ps])):
                    grads[id(p)] = gp.view_as(p).to(p.dtype)
                continue
            h, s = gen.aux["seen"][i]
            params = synapses(layer)
            with torch.enable_grad():
                z = current(layer, h, s, held)
                for p, gp in zip(params, torch.autograd.grad(z, params, g.to(z.dtype))):
                    grads[id(p)] = gp
        if spec.weights is not None:
            shaped = self.shaping(gen.fitness)  # type: ignore[arg-type]
            wparams = [gen.params[j] for j in spec.weight_params]
            for p, g in zip(wparams, estimate(wparams, spec.weights, shaped)):
                grads[id(p)] = -g  # the ES estimate points uphill in fitness
        return [grads.get(id(p), torch.zeros_like(p)) for p in gen.params]

    def _noise_credit(self, model: nn.Module, gen: Generation, diff: Tensor) -> list[Tensor]:
        """``d loss / d I`` per node layer from the injected noise (``credit=noise``), in the
        current's layout (B, N) or (B, T, N), scaled for the batch-mean loss."""
        spec: NodePerturbation = gen.source
        noise = NodeNoise(model, gen.params, spec)
        cur_grads = [gen.params[0].new_zeros(shape) for shape in spec.shapes]
        pairs = spec.population // 2
        assign = torch.tensor(spec.assign) if spec.assign else None
        for k0 in range(0, pairs, PAIRS_PER_BLOCK):
            k1 = min(k0 + PAIRS_PER_BLOCK, pairs)
            for j, (g, xi) in enumerate(zip(cur_grads, noise.pairs(k0, k1))):
                d = diff[k0:k1] if assign is None else diff[k0:k1] * (assign[k0:k1, None] == j)
                # held xi (K, B, N); step xi (K, T, B, N): the sample axis is second to last
                g += torch.einsum("kb,k...bn->...bn", d.to(xi.dtype), xi)
        out = []
        grids = spec.grids or ((),) * len(spec.layers)
        for j, (sigma, g, blocks) in enumerate(zip(spec.sigmas, cur_grads, grids)):
            own = spec.assign.count(j) if spec.assign else pairs  # the pairs that perturbed it
            g = g / (diff.shape[1] * 2 * own * sigma)  # ~ d loss / d I, per sample
            if j in noise.scales:  # per-sample parameters: ~ d loss / d theta, per sample
                g = g / noise.scales[j].to(g)
            if blocks:  # a block's draw credits the sum over its positions: give each the mean
                g = g / block_sizes(blocks).to(g)
            out.append(g if g.dim() == 2 else g.transpose(0, 1))  # (T, B, N) -> (B, T, N)
        return out


def pair_differences(samples: Tensor, shared: Tensor) -> Tensor:
    """Each antithetic pair's per-sample loss difference (K, B) from the members' per-sample
    losses (P, B) and batch-level rest (P,): ``c_b = l_b + B R`` credits the rest (rate terms)
    to every sample, so the batch mean of ``c`` is the member's loss."""
    credit = samples + samples.shape[1] * shared[:, None]
    return credit[0::2] - credit[1::2]


def credit_for(model: nn.Module, cfg: Config) -> str:
    """``nodepert.credit``, with ``auto`` resolved: activity credit when no conv layer takes
    node noise on its current (conv layers with per-sample parameter noise are credited from
    their noise either way), the population is at most ACTIVITY_MAX_POPULATION and the members
    run in this process; injected-noise credit otherwise. Why conv currents take noise credit:
    on both conv nets measured (MNIST-1D 16-32, the CIFAR-10 subset 8-16) activity credit
    trained worse (78.3 vs 83.7 % at a quarter of mnist1d-es's budget; 40.6 vs 42.7 % on the
    subset) although its per-layer cosines with the surrogate gradient were higher --
    undiagnosed."""
    n, e = cfg.nodepert, cfg.es
    if n.credit != "auto":
        return n.credit
    layers = node_layers(model, n.conv)
    kernels = kernel_positions(model, layers, n.conv)
    conv = any(type(layers_of(model)[i]) is ConvLIF and j not in kernels
               for j, i in enumerate(layers))  # fmt: skip
    small = e.population <= ACTIVITY_MAX_POPULATION
    return "activity" if not conv and small and not e.workers else "noise"


def grid(layer: nn.Module, block: int) -> tuple[int, ...]:
    """A conv layer's blocked noise grid (C, H, W, bh, bw) for ``nodepert.block``, or () (dense
    and recurrent layers, or block 1). Neighbouring positions of a conv current share most of
    their gradient (they feed the same pooling window and, through overlapping kernels, the
    same next-layer units), so one draw per block trades a little bias for block^2 fewer
    dimensions to estimate per sample."""
    if block == 1 or not isinstance(layer, ConvLIF):
        return ()
    h, w = layer.hw
    return (layer.conv.out_channels, h, w, 1 if h == 1 else block, block)


def recorded_layers(model: nn.Module, layers: list[int], credit: str) -> tuple[int, ...]:
    """Positions in ``layers`` whose measured current changes credit them: every node layer
    for ``credit=activity``, the dense and recurrent ones for ``mixed``, none for ``noise``."""
    if credit == "activity":
        return tuple(range(len(layers)))
    if credit == "mixed":
        return tuple(j for j, i in enumerate(layers) if type(layers_of(model)[i]) is not ConvLIF)
    return ()


def least_squares(d: Tensor, changes: Tensor, ridge: float) -> Tensor:
    """Per sample ``b``, the current gradient ``g_b`` that best explains the pairs' loss
    changes ``d`` (K, B) from their measured current changes ``changes`` (K, B, N) or
    (K, T, B, N): ``d_kb ~ g_b . changes_kb``, solved in the span of the K changes (minimum
    norm) with a ridge of ``ridge`` times the changes' mean squared norm. Returns the
    gradients in the current's layout, (B, N) or (B, T, N).

    Regressing on the *measured* change instead of the injected noise takes out what the
    noise of earlier layers did to this layer's current (it is in the change, not left in
    the loss difference as noise), and the solve undoes the changes' correlations: on the
    readout, whose few currents decide the loss, K >= N pairs recover the per-sample gradient
    almost exactly (Dalm et al. 2023's activity-based node perturbation, made per sample).
    """
    pairs, batch = d.shape
    rows = changes.movedim(-2, 0).reshape(batch, pairs, -1).double()  # (B, K, M)
    target = d.T.double()[..., None]  # (B, K, 1)
    lam = ridge * rows.pow(2).sum((1, 2)).clamp_min(1e-30) / pairs  # (B,): ridge x mean |D_k|^2
    dim = rows.shape[-1]
    # the same ridge solution either way; solve the smaller system: K x K when the pairs are
    # fewer than the currents (D^T (D D^T + lam)^-1 d), else M x M ((D^T D + lam)^-1 D^T d)
    if pairs <= dim:
        eye = torch.eye(pairs, dtype=rows.dtype, device=rows.device)
        gram = rows @ rows.transpose(1, 2) + lam[:, None, None] * eye
        g = (rows.transpose(1, 2) @ torch.linalg.solve(gram, target)).squeeze(-1)  # (B, M)
    else:
        eye = torch.eye(dim, dtype=rows.dtype, device=rows.device)
        gram = rows.transpose(1, 2) @ rows + lam[:, None, None] * eye
        g = torch.linalg.solve(gram, rows.transpose(1, 2) @ target).squeeze(-1)
    return g.view(batch, *changes.shape[1:-2], changes.shape[-1]).to(changes.dtype)
