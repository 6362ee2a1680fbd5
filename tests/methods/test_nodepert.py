"""Node perturbation: the estimate converges to the true gradient, batched members equal a
member-by-member loop, it learns on hard spikes, bad settings fail before training."""

import math

import pytest
import torch

from spikeopt.config import Config, ConfigError, apply
from spikeopt.functional.loss import make_loss
from spikeopt.methods import make_method
from spikeopt.methods.nodepert import (
    credit_for,
    kernel_positions,
    kernel_sigmas,
    least_squares,
    node_layers,
)
from spikeopt.methods.strategy import Generation, cosine
from spikeopt.nn import build_model
from spikeopt.nn.quant import apply_hw
from spikeopt.population import (
    NodeNoise,
    NodePerturbation,
    block_sizes,
    coarse,
    evaluate_samples,
    layer_params,
    perturbed,
)
from spikeopt.population.node import expand_blocks
from spikeopt.tasks.datasets import load_dataset

DIGITS = {"data.name": "digits", "data.normalize": True, "encoder.steps": 4,
          "model.readout": "li", "loss.name": "ce_mean", "method.name": "nodepert",
          "optim.name": "sgd", "optim.momentum": 0.0, "optim.lr": 1e-9}  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    data = load_dataset(apply(Config(), DIGITS).data)
    x = data.x_train[:64].flatten(1)[:, None].expand(-1, 4, -1)  # static: stride-0 time axis
    return x, data.y_train[:64]


def _setup(**over):
    cfg = apply(Config(), {**DIGITS, **over})
    torch.manual_seed(0)
    model = build_model(cfg, (64,), 10)
    loss = make_loss(cfg.loss)
    method = make_method(cfg, loss)
    return cfg, model, loss, method, method.init(model, cfg)


def _estimate(method, state, batch):
    state, metrics = method.step(state, batch)  # lr ~ 0: p.grad holds the estimate
    return [p.grad.clone() for p in state.model.parameters()], metrics


@pytest.mark.parametrize("noise", ["held", "step"])
def test_estimate_converges_to_the_true_gradient_of_a_smooth_layer(digits, noise):
    # a leaky-integrator readout on a static input: the loss is smooth in the current and its
    # gradient is exact under autograd, so the estimate must converge to it as P grows
    errors = []
    for population in (64, 256, 1024):
        _, model, loss, method, state = _setup(**{"model.hidden": [], "es.population": population,
                                                  "nodepert.noise": noise,
                                                  "nodepert.credit": "noise"})  # fmt: skip
        s, v = model(digits[0])
        true = torch.autograd.grad(loss(s, v, digits[1])[0], list(model.parameters()))
        est, _ = _estimate(method, state, digits)
        err = math.sqrt(sum(float((e - t).pow(2).sum()) for e, t in zip(est, true)))
        errors.append(err / math.sqrt(sum(float(t.pow(2).sum()) for t in true)))
        assert cosine(est, list(true)) > {64: 0.9, 256: 0.97, 1024: 0.99}[population]
    assert errors[0] > errors[1] > errors[2]  # relative error shrinks ~ 1/sqrt(P)
    assert errors[2] < 0.1


def test_batched_members_equal_a_member_by_member_loop(digits):
    _, model, loss, _, _ = _setup(**{"model.hidden": [24], "es.population": 6,
                                     "model.readout": "lif", "loss.name": "ce_count"})  # fmt: skip
    params = [p for _, p in perturbed(model)]
    layers = node_layers(model, "weight")
    shapes = ((64, 24), (64, 10))
    spec = NodePerturbation(6, tuple(layers), (0.3, 0.2), shapes, seed=5, generation=2)
    samples, shared = evaluate_samples(model, spec, digits, loss, chunk=4)  # chunks of 4 + 2
    noise = NodeNoise(model, params, spec)
    for m in range(6):
        xi = noise.members(m, m + 1).node
        handles = []
        for i in layers:  # the reference: the plain model with the noise added to each current
            e = xi[id(model.layers[i].neuron)][0]
            handles.append(model.layers[i].fc.register_forward_hook(
                lambda mod, a, out, e=e: out + (e if out.dim() == 2 else e[:, None])))  # fmt: skip
        with torch.no_grad():
            s, v = model(digits[0])
            ref, ref_shared = loss.per_sample(s, v, digits[1])
        for h in handles:
            h.remove()
        assert torch.allclose(samples[m].float(), ref, atol=1e-5), m
        assert float(shared[m]) == pytest.approx(float(ref_shared), abs=1e-6)
    # antithetic pairs: a pair's noise is equal and opposite, so the pair's losses differ
    assert not torch.equal(samples[0], samples[1])


def test_hidden_layers_and_recurrent_layers_learn_on_hard_spikes(digits):
    for over in ({"model.hidden": [64]}, {"model.hidden": [32], "model.arch": "rsnn"}):
        _, model, _, method, state = _setup(**{**over, "es.population": 32, "optim.lr": 3e-3,
                                                  "optim.name": "adam"})  # fmt: skip
        first = None
        for _ in range(30):
            state, metrics = method.step(state, digits)
            first = first if first is not None else metrics["loss"]
        assert metrics["loss"] < 0.5 * first, over  # a fixed batch: the loss must fall
        assert all(math.isfinite(metrics[f"node_sigma_{i}"]) for i in node_layers(model, "weight"))


def test_conv_layers_take_weight_noise_or_node_noise():
    cfg = apply(Config(), {**DIGITS, "model.arch": "conv", "model.channels": [4],
                           "model.hidden": [16], "es.population": 8})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 10)
    assert node_layers(model, "weight") == [1, 2] and node_layers(model, "node") == [0, 1, 2]
    data = load_dataset(cfg.data)
    x = data.x_train[:16][:, None].expand(-1, 4, -1, -1, -1)
    for conv in ("weight", "node"):
        c = apply(cfg, {"nodepert.conv": conv})
        method = make_method(c, make_loss(c.loss))
        state = method.init(model, c)
        _, metrics = method.step(state, (x, data.y_train[:16]))
        assert ("sigma" in metrics) == (conv == "weight")  # ES weight noise on the conv kernels
        assert ("node_sigma_0" in metrics) == (conv == "node")
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("over", "match"),
    [({"nodepert.sigma": 0.0}, "nodepert.sigma"), ({"nodepert.sigma": float("nan")}, "sigma"),
     ({"nodepert.noise": "every"}, "held, step"), ({"nodepert.conv": "both"}, "sample, auto"),
     ({"nodepert.sigma_mode": "rel"}, "relative, absolute"), ({"es.population": 7}, "even"),
     ({"nodepert.block": 0}, "nodepert.block")],
)  # fmt: skip
def test_bad_settings_fail_when_the_method_is_built(over, match):
    cfg = apply(Config(), {**DIGITS, **over})
    with pytest.raises(ConfigError, match=match):
        make_method(cfg, make_loss(cfg.loss))


def test_models_off_the_batched_path_are_refused_clearly():
    cfg = apply(Config(), {**DIGITS, "model.arch": "cnn"})
    method = make_method(cfg, make_loss(cfg.loss))
    with pytest.raises(ConfigError, match="spikeopt layers"):
        method.init(build_model(cfg, (64,), 10), cfg)


def test_split_gives_each_pair_one_layer_in_proportion_to_sqrt_dim(digits):
    from spikeopt.population import split_pairs

    assign = split_pairs(16, [400, 100])
    assert assign.count(0) > assign.count(1) >= 1 and len(assign) == 16
    assert set(assign[:4]) == {0, 1}  # interleaved: every chunk mixes the layers
    with pytest.raises(ConfigError, match="one antithetic pair per node layer"):
        split_pairs(1, [10, 10])
    _, model, _, _, _ = _setup(**{"model.hidden": [24]})
    params = [p for _, p in perturbed(model)]
    spec = NodePerturbation(8, (0, 1), (0.3, 0.2), ((64, 24), (64, 10)), 5, 2,
                            assign=(0, 1, 0, 0))  # fmt: skip
    chunk = NodeNoise(model, params, spec).members(0, 8).node
    hidden, readout = (chunk[id(model.layers[i].neuron)] for i in (0, 1))
    own = torch.tensor([0, 0, 1, 1, 0, 0, 0, 0], dtype=torch.bool)  # members of pair 1 -> readout
    assert hidden[own].abs().sum() == 0 and readout[~own].abs().sum() == 0
    assert hidden[~own].abs().sum() > 0 and readout[own].abs().sum() > 0


def test_least_squares_recovers_a_gradient_the_changes_span():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(5, 10, generator=gen, dtype=torch.float64)  # (B, N)
    changes = torch.randn(16, 5, 10, generator=gen, dtype=torch.float64)  # K >= N: determined
    d = torch.einsum("kbn,bn->kb", changes, g)
    assert torch.allclose(least_squares(d, changes, 1e-9), g, atol=1e-6)
    few = changes[:4]  # K < N: the minimum-norm solution, g projected onto the changes' span
    est = least_squares(torch.einsum("kbn,bn->kb", few, g), few, 1e-9)
    for b in range(5):
        q, _ = torch.linalg.qr(few[:, b].T)
        assert torch.allclose(est[b], q @ (q.T @ g[b]), atol=1e-6)
    step = changes.view(16, 5, 2, 5).transpose(1, 2)  # (K, T, B, N): per-sample rows span T x N
    est = least_squares(d, step, 1e-9)
    assert est.shape == (5, 2, 5) and torch.allclose(est.flatten(1), g, atol=1e-6)
    # K x K (pairs <= currents) and M x M (more pairs) solves give the same ridge solution
    noisy = d + 0.1 * torch.randn(d.shape, generator=gen, dtype=torch.float64)
    for k in (10, 11):
        wide = least_squares(noisy[:k], changes[:k], 0.3)
        narrow = least_squares(noisy[:k], changes[:k, :, : k - 1], 0.3)  # M = k-1 < K: M x M
        a = changes[:k, :, : k - 1].permute(1, 0, 2)  # reference: the primal formula per sample
        lam = (0.3 * a.pow(2).sum((1, 2)) / k)[:, None, None]
        y, at = noisy[:k].T[..., None], a.transpose(1, 2)
        ref = torch.linalg.solve(at @ a + lam * torch.eye(k - 1), at @ y).squeeze(-1)
        assert torch.allclose(narrow, ref, atol=1e-9) and wide.shape == (5, 10)
        dual = at @ torch.linalg.solve(a @ at + lam * torch.eye(k), y)  # the K x K form
        assert torch.allclose(narrow, dual.squeeze(-1), atol=1e-9)


@pytest.mark.parametrize("noise", ["held", "step"])
def test_activity_credit_recovers_the_readout_gradient_from_few_pairs(digits, noise):
    # on the smooth readout the loss is a function of its 10 currents: 16 pairs measure every
    # direction, so the per-sample least squares is (nearly) the exact gradient, where the
    # injected-noise estimate from the same members is still noisy
    cos = {}
    for credit in ("activity", "noise"):
        _, model, loss, method, state = _setup(**{"model.hidden": [], "es.population": 32,
                                                  "nodepert.noise": noise,
                                                  "nodepert.credit": credit})  # fmt: skip
        s, v = model(digits[0])
        true = torch.autograd.grad(loss(s, v, digits[1])[0], list(model.parameters()))
        est, _ = _estimate(method, state, digits)
        cos[credit] = cosine(est, list(true))
    assert cos["activity"] > (0.99 if noise == "held" else 0.95) > cos["noise"], cos


def test_activity_credit_takes_out_the_noise_of_earlier_layers(digits):
    # a hidden layer's noise reaches the readout's current; regressing on the measured change
    # there credits the readout far better than its own injected noise does
    cos = {}
    for credit in ("activity", "noise"):
        _, _, _, method, state = _setup(**{"model.hidden": [64], "es.population": 32,
                                           "nodepert.credit": credit})  # fmt: skip
        est, _ = _estimate(method, state, digits)
        true = method.objective.gradient(state.model, digits)
        cos[credit] = cosine(est[-2:], true[-2:])  # the readout's weight and bias
    assert cos["activity"] > cos["noise"] + 0.1, cos


@pytest.mark.parametrize("arch", ["mlp", "rsnn"])
def test_recorded_activity_is_each_pairs_measured_current_change(digits, arch):
    _, model, loss, _, _ = _setup(**{"model.hidden": [12], "model.arch": arch, "es.population": 6,
                                     "model.readout": "lif", "loss.name": "ce_count"})  # fmt: skip
    params = [p for _, p in perturbed(model)]
    layers = node_layers(model, "weight")
    spec = NodePerturbation(6, tuple(layers), (0.3, 0.2), ((64, 12), (64, 10)), seed=5,
                            generation=2)  # fmt: skip
    got = {}
    for chunk in (2, 3, 6):  # odd chunks split pairs: the sums must not care
        activity: list[torch.Tensor] = []
        evaluate_samples(model, spec, digits, loss, chunk=chunk, activity=activity)
        got[chunk] = activity
    noise = NodeNoise(model, params, spec)
    currents = []
    for m in range(6):  # the reference: the plain model, noise added, its currents recorded
        xi = noise.members(m, m + 1).node
        seen, handles = {}, []
        for i in layers:
            e = xi[id(model.layers[i].neuron)][0]

            def hook(mod, a, out, e=e, i=i, seen=seen):
                seen[i] = out + (e if out.dim() == 2 else e[:, None])
                return seen[i]

            handles.append(model.layers[i].fc.register_forward_hook(hook))
        with torch.no_grad():
            s, _ = model(digits[0])
        for h in handles:
            h.remove()
        if arch == "rsnn":  # the recurrent layer's current also has V s[t-1]
            prev = torch.nn.functional.pad(s[0][:, :-1], (0, 0, 1, 0))
            seen[0] = seen[0].unsqueeze(1) + model.layers[0].rec(prev)  # static (B, N) + (B, T, N)
        currents.append([c if c.dim() == 2 else c.mean(1) for c in (seen[i] for i in layers)])
    for j in range(len(layers)):
        ref = torch.stack([(currents[2 * k][j] - currents[2 * k + 1][j]) / 2 for k in range(3)])
        for chunk, activity in got.items():
            assert torch.allclose(activity[j], ref, atol=1e-5), (j, chunk)


def test_mixed_credit_takes_activity_on_dense_layers_and_noise_on_conv_layers():
    # the same members, so each layer's estimate must be exactly what the pure credit gives it
    cfg = apply(Config(), {**DIGITS, "model.arch": "conv", "model.channels": [4],
                           "model.hidden": [16], "es.population": 8,
                           "nodepert.conv": "node"})  # fmt: skip
    data = load_dataset(cfg.data)
    batch = (data.x_train[:16][:, None].expand(-1, 4, -1, -1, -1), data.y_train[:16])
    est = {}
    for credit in ("noise", "activity", "mixed"):
        c = apply(cfg, {"nodepert.credit": credit})
        torch.manual_seed(0)
        model = build_model(c, (1, 8, 8), 10)
        method = make_method(c, make_loss(c.loss))
        est[credit], _ = _estimate(method, method.init(model, c), batch)
    names = [n for n, _ in model.named_parameters()]
    for name, mixed, noise, activity in zip(names, est["mixed"], est["noise"], est["activity"]):
        want = noise if name.startswith("layers.0.") else activity  # layers.0: the conv layer
        assert torch.allclose(mixed, want, rtol=1e-5, atol=1e-7), name
        assert not torch.allclose(noise, activity, rtol=1e-3), name  # the credits differ


def test_block_noise_spreads_one_draw_over_each_block_edges_included():
    grid = (2, 5, 3, 2, 2)  # 5 x 3 positions in 2 x 2 blocks: the last row and column partial
    draws = torch.arange(float(coarse(grid)))
    assert coarse(grid) == 2 * 3 * 2
    spread = expand_blocks(draws[None, None], grid)[0, 0].view(2, 5, 3)
    for c, i, j in ((0, 0, 0), (0, 1, 1), (1, 4, 2), (1, 3, 0)):
        assert spread[c, i, j] == draws.view(2, 3, 2)[c, i // 2, j // 2]
    sizes = block_sizes(grid).view(2, 5, 3)
    assert (sizes[:, :4, :2] == 4).all() and (sizes[:, 4, :2] == 2).all()
    assert (sizes[:, :4, 2] == 2).all() and (sizes[:, 4, 2] == 1).all()


def test_block_noise_credit_converges_to_the_block_mean_gradient_with_less_variance():
    # pair loss differences exactly linear in the injected noise, d = 2 sigma <xi, delta>:
    # one draw per block estimates the block's summed gradient, credited as its mean
    cfg = apply(Config(), {**DIGITS, "model.arch": "conv", "model.channels": [4],
                           "model.hidden": []})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 10)
    method = make_method(cfg, make_loss(cfg.loss))
    batch, n, sigma = 3, 4 * 8 * 8, 0.5
    grid = (4, 8, 8, 2, 2)
    delta = torch.randn(batch, n)
    block_mean = expand_blocks(torch.nn.functional.avg_pool2d(delta.view(batch, 4, 8, 8), 2)
                               .flatten(1), grid)  # fmt: skip

    def credit(grids, delta, population):
        spec = NodePerturbation(population, (0,), (sigma,), ((batch, n),), 3, 0, grids=grids)
        gen = Generation(None, [p for _, p in perturbed(model)], source=spec)
        xi = NodeNoise(model, gen.params, spec).pairs(0, population // 2)[0]
        diff = 2 * sigma * (xi * delta).sum(-1)
        return method._noise_credit(model, gen, diff)[0] * batch  # per-sample scale

    def error(got, want):
        return float((got - want).norm() / want.norm())

    errors = [error(credit((grid,), delta, p), block_mean) for p in (64, 4096)]
    # 64 draws per sample: the relative error falls as sqrt(64 / pairs), to 0.18 at 2048
    assert errors[1] < 0.25 and errors[1] < errors[0] / 5  # unbiased for the block mean
    # on a gradient constant over blocks, blocks estimate it far better from the same pairs
    flat, blocked = (error(credit(g, block_mean, 64), block_mean) for g in ((), (grid,)))
    assert blocked < flat / 1.7  # 4 positions per draw: ~2x less error


def test_auto_credit_is_activity_for_small_dense_nets_in_process_else_noise():
    cases = [({}, "activity"), ({"model.arch": "rsnn"}, "activity"),
             ({"es.population": 256}, "noise"), ({"es.workers": 2}, "noise"),
             ({"model.arch": "conv", "model.channels": [4]}, "activity"),  # conv=auto: kernel
             ({"model.arch": "conv", "model.channels": [4], "nodepert.conv": "node"}, "noise"),
             ({"model.arch": "conv", "model.channels": [4], "nodepert.conv": "weight"}, "activity"),
             ({"model.arch": "conv", "model.channels": [4], "nodepert.conv": "sample"}, "activity"),
             ({"model.arch": "conv", "model.channels": [4, 8], "nodepert.conv": "auto"}, "noise"),
             ({"nodepert.credit": "noise"}, "noise")]  # fmt: skip
    for over, want in cases:
        cfg = apply(Config(), {**DIGITS, "model.hidden": [16], **over})
        shape = (1, 8, 8) if cfg.model.arch == "conv" else (64,)
        model = build_model(cfg, shape, 10)
        assert credit_for(model, cfg) == want, over


def test_activity_credit_is_refused_with_ray_workers_and_a_bad_ridge():
    for over, match in (({"es.workers": 2, "nodepert.credit": "activity"}, "credit=noise"),
                        ({"es.workers": 2, "nodepert.credit": "mixed"}, "credit=noise"),
                        ({"nodepert.ridge": 0.0}, "nodepert.ridge")):  # fmt: skip
        cfg = apply(Config(), {**DIGITS, **over})
        with pytest.raises(ConfigError, match=match):
            make_method(cfg, make_loss(cfg.loss))


def _conv_net(norm, channels=(4, 6)):
    cfg = apply(Config(), {**DIGITS, "model.arch": "conv", "model.channels": list(channels),
                           "model.hidden": [], "model.norm": norm, "encoder.steps": 3})  # fmt: skip
    torch.manual_seed(0)
    return cfg, build_model(cfg, (1, 8, 8), 10)


def _kernel_spec(model, batch, population=6, sigmas=None):
    convs = [layer for layer in model.layers if type(layer).__name__ == "ConvLIF"]
    dims = [sum(p.numel() for p in layer_params(layer)) for layer in convs]
    sig = sigmas or tuple(tuple(0.1 * (k + 1) for k in range(len(layer_params(layer))))
                          for layer in convs)  # fmt: skip
    n = len(convs)
    return NodePerturbation(population, tuple(range(n + 1)), (*(1.0,) * n, 0.1),
                            (*((batch, d) for d in dims), (batch, 10)), seed=5,
                            generation=2, kernels=tuple(range(n)), kernel_sigmas=sig)  # fmt: skip


@pytest.mark.parametrize(("norm", "static"), [("none", True), ("batch", True), ("batch", False)])
def test_per_sample_kernel_noise_equals_each_sample_run_with_its_own_parameters(norm, static):
    # the reference: the plain model, every sample's conv run with its own kernel (and bias),
    # batch norm on the batch's statistics with every sample's own affine
    F = torch.nn.functional
    cfg, model = _conv_net(norm)
    data, batch = load_dataset(cfg.data), 5
    frames = data.x_train[:batch][:, None]
    x = frames.expand(-1, 3, -1, -1, -1) if static else frames * torch.rand(batch, 3, 1, 1, 1)
    y, loss = data.y_train[:batch], make_loss(cfg.loss)
    spec = _kernel_spec(model, batch)
    samples, _ = evaluate_samples(model, spec, (x, y), loss, chunk=4)  # chunks of 4 + 2
    noise = NodeNoise(model, [p for _, p in perturbed(model)], spec)
    for m in range(6):
        chunk = noise.members(m, m + 1)
        change = {k: v[0] for k, v in chunk.kernels.items()}  # by id(param): (B, *shape)

        def conv(mod, args, out, change=change):
            rows = args[0]  # (B*T, C, H, W), frame f from sample f // T
            per = rows.shape[0] // batch
            out = []
            for f in range(rows.shape[0]):
                w = mod.weight + change[id(mod.weight)][f // per]
                b = None if mod.bias is None else mod.bias + change[id(mod.bias)][f // per]
                out.append(F.conv2d(rows[f : f + 1], w, b, mod.stride, mod.padding))
            return torch.cat(out)

        def bn(mod, args, out, change=change):
            z = args[0]
            b = torch.arange(z.shape[0]) // (z.shape[0] // batch)
            scale = (mod.weight + change[id(mod.weight)][b])[:, :, None, None]
            shift = (mod.bias + change[id(mod.bias)][b])[:, :, None, None]
            return F.batch_norm(z, None, None, None, None, True, 0.0, mod.eps) * scale + shift

        xi = chunk.node[id(model.layers[2].neuron)][0]
        hooks = [model.layers[2].fc.register_forward_hook(
            lambda mod, a, out, xi=xi: out + (xi if out.dim() == 2 else xi[:, None]))]  # fmt: skip
        for layer in model.layers[:2]:
            hooks.append(layer.conv.register_forward_hook(conv))
            if layer.bn is not None:
                hooks.append(layer.bn.register_forward_hook(bn))
        with torch.no_grad():
            s, v = model(x)
        for h in hooks:
            h.remove()
        assert torch.allclose(samples[m].float(), loss.per_sample(s, v, y)[0], atol=1e-5), m
    assert not torch.equal(samples[0], samples[1])  # the pair's noise moved the losses


def test_per_sample_kernel_credit_converges_to_the_batch_gradient_of_every_parameter():
    # pair loss differences exactly linear in the injected parameter noise, per sample
    # d_kb = 2 <sigma xi_kb, h_b>: the estimate of each tensor is the batch mean of its h_b
    cfg, model = _conv_net("batch", (4,))
    method = make_method(cfg, make_loss(cfg.loss))
    state = method.init(model, cfg)
    ps = layer_params(model.layers[0])
    batch, sigmas = 6, (0.05, 0.3, 0.2)
    scale = torch.cat([torch.full((p.numel(),), s) for p, s in zip(ps, sigmas)])
    # per-sample gradients: a shared part plus each sample's own; sensitivities ~ 1 / sigma, so
    # each tensor's noise moves the loss alike (as kernel_sigmas's current-matched sigmas do)
    h = (torch.randn(scale.numel()) + 0.5 * torch.randn(batch, scale.numel())) / scale
    true = [t.mean(0).view_as(p) for p, t in zip(ps, h.split([p.numel() for p in ps], 1))]
    errors = []
    for population in (64, 4096):
        spec = NodePerturbation(population, (0,), (1.0,), ((batch, h.shape[1]),), 3, 0,
                                kernels=(0,), kernel_sigmas=(sigmas,))  # fmt: skip
        gen = Generation(None, [p for _, p in perturbed(model)], source=spec)
        noise = NodeNoise(model, gen.params, spec)
        xi = noise.pairs(0, population // 2)[0]  # (K, B, D) unit draws
        diff = 2 * (xi * noise.scales[0] * h).sum(-1)  # (K, B)
        samples = torch.zeros(population, batch, dtype=torch.float64)
        samples[0::2] = diff.double()
        gen.aux = {"losses": (samples, torch.zeros(population)), "activity": None, "seen": {}}
        est = dict(zip(map(id, gen.params), method.tell(state, gen)))
        errors.append([float((est[id(p)] - t).norm() / t.norm()) for p, t in zip(ps, true)])
    # relative error ~ sqrt(D / (B pairs)): ~0.06 at 2048 pairs, ~0.5 at 32 (D = 44, B = 6)
    assert all(e < 0.15 for e in errors[1]), errors
    assert all(a > 4 * b for a, b in zip(*errors)), errors  # unbiased: shrinks ~ 1/sqrt(pairs)


def test_auto_gives_per_sample_kernel_noise_where_the_kernel_is_smaller_than_its_current():
    _, model = _conv_net("batch", (16, 32))
    layers = node_layers(model, "auto")
    assert layers == [0, 1, 2]
    # conv1: 16 x 1 x 3 x 3 = 144 weights < 16 x 8 x 8 currents; conv2: 4608 > 32 x 4 x 4
    assert kernel_positions(model, layers, "auto") == (0,)
    assert kernel_positions(model, layers, "sample") == (0, 1)
    assert kernel_positions(model, layers, "node") == ()


@pytest.mark.parametrize("relative", [True, False])
def test_kernel_sigmas_move_the_current_by_the_node_noise_of_the_same_setting(relative):
    # each tensor's noise alone moves the layer's current by sigma x its std (relative) or by
    # sigma (absolute): the rule that makes one nodepert.sigma fit node and kernel noise alike
    F = torch.nn.functional
    cfg, model = _conv_net("batch", (4,))
    layer = model.layers[0]
    data = load_dataset(cfg.data)
    x = (data.x_train[:64][:, None] * 3).expand(-1, 3, -1, -1, -1)  # off unit scale
    sigmas = kernel_sigmas(layer, x, 0.1, relative)
    ps = layer_params(layer)
    assert len(sigmas) == len(ps) == 3

    def current(w, gamma, beta):
        z = F.conv2d(x[:, 0], w, None, layer.conv.stride, layer.conv.padding)
        return F.batch_norm(z, None, None, gamma, beta, True, 0.0, layer.bn.eps)

    torch.manual_seed(1)
    with torch.no_grad():
        base = current(*ps)
        target = 0.1 * (float(base.std()) if relative else 1.0)
        for k, s in enumerate(sigmas):  # the rms change over 200 draws (4 channels each)
            sq = 0.0
            for _ in range(200):
                moved = [p + s * torch.randn_like(p) if j == k else p for j, p in enumerate(ps)]
                sq += float((current(*moved) - base).pow(2).mean()) / 200
            if k == 0 and not relative:  # batch norm rescales a kernel change by 1 / std
                target_k = target / float(F.conv2d(x[:, 0], ps[0], None, 1, 1).std())
            else:
                target_k = target
            assert sq**0.5 == pytest.approx(target_k, rel=0.25), k


def test_conv_sample_trains_without_es_noise_and_learns_on_hard_spikes():
    cfg, _ = _conv_net("batch", (4,))
    cfg = apply(cfg, {"nodepert.conv": "sample", "es.population": 16, "optim.name": "adam",
                      "optim.lr": 1e-2, "model.hidden": [32]})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 10)
    data = load_dataset(cfg.data)
    batch = (data.x_train[:64][:, None].expand(-1, 3, -1, -1, -1), data.y_train[:64])
    method = make_method(cfg, make_loss(cfg.loss))
    state = method.init(model, cfg)
    first = None
    for _ in range(30):
        state, metrics = method.step(state, batch)
        first = first if first is not None else metrics["loss"]
    assert "sigma" not in metrics and metrics["kernel_sigma_0"] > 0  # no ES weight noise left
    assert metrics["loss"] < 0.8 * first  # a fixed batch: the loss must fall (node: 0.68)


def test_quantised_conv_kernels_keep_node_noise_and_sample_is_refused():
    # every member must run the exact quantised kernels: per-sample float changes would not be
    cfg = apply(Config(), {**DIGITS, "model.arch": "conv", "model.channels": [4],
                           "model.hidden": [], "hw.weight_bits": 4})  # fmt: skip
    torch.manual_seed(0)
    model = apply_hw(build_model(cfg, (1, 8, 8), 10), cfg)  # what a run's model gets
    layers = node_layers(model, "auto")
    assert layers == [0, 1] and kernel_positions(model, layers, "auto") == ()
    method = make_method(cfg, make_loss(cfg.loss))
    data = load_dataset(cfg.data)
    batch = (data.x_train[:16][:, None].expand(-1, 4, -1, -1, -1), data.y_train[:16])
    _, metrics = method.step(method.init(model, cfg), batch)
    assert "node_sigma_0" in metrics and "kernel_sigma_0" not in metrics
    bad = apply(cfg, {"nodepert.conv": "sample"})
    with pytest.raises(ConfigError, match="conv=auto"):
        make_method(bad, make_loss(bad.loss)).init(model, bad)
