"""Checks of the learning signal: one-batch overfitting, ES-vs-surrogate gradient quality, and
how the input encoding changes what ES sees."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch
from torch import Tensor

from spikeopt.config import Config, ConfigError, apply
from spikeopt.diagnose.checks import Finding, Row, fixed_batch
from spikeopt.methods.strategy import cosine
from spikeopt.population import Perturbation, estimate, get_shaping, perturbed
from spikeopt.train.experiment import Experiment, build

FALLS = 0.7  # "the loss falls": the last loss is below this fraction of the first


def overfit_batch(cfg: Config, steps: int = 40) -> Finding:
    """BPTT and ES, each from the same initial weights, trained on one fixed batch."""
    rows: list[Row] = []
    ends: dict[str, tuple[float, float, float]] = {}
    for name in ("surrogate", "es"):
        exp = build(apply(cfg, {"method.name": name}))
        batch = fixed_batch(exp)
        first = _loss(exp, batch)[0]
        for t in range(steps):
            exp.state, m = exp.method.step(exp.state, batch)
            rows.append({"method": name, "step": t, "loss": m["loss"], "acc": m["acc"]})
        ends[name] = (first, *_loss(exp, batch))
    falls = {n: e[1] < FALLS * e[0] for n, e in ends.items()}
    shown = "; ".join(
        f"{'BPTT' if n == 'surrogate' else 'ES'} loss {a:.3f} -> {b:.3f} (acc {c:.2f})"
        + ("" if falls[n] else " does NOT fall")
        for n, (a, b, c) in ends.items()
    )
    n = len(batch[1])
    verdict = f"{shown} after {steps} steps on one batch of {n} (optim.lr {cfg.optim.lr:g})"
    return Finding("overfit-batch", all(falls.values()), verdict, rows, "step", ["loss", "acc"],
                   group="method")  # fmt: skip


def _loss(exp: Experiment, batch: tuple[Tensor, Tensor]) -> tuple[float, float]:
    """Loss and accuracy of the model on ``batch`` in eval mode (no dropout)."""
    task = exp.classification
    task.model.eval()
    with torch.no_grad():
        spikes, mems = task.model(batch[0])
        loss, scores = task.loss(spikes, mems, batch[1])
    return float(loss), float((scores.argmax(-1) == batch[1]).float().mean())


def grad_quality(
    cfg: Config,
    populations: Sequence[int] = (16, 64, 256),
    sigmas: Sequence[float] = (0.01, 0.05, 0.2),
) -> Finding:
    """Cosine of the ES estimate with the surrogate gradient, and of independent ES estimates
    with each other (three, pairwise), on one batch, for every (population, sigma).

    Two independent estimates agree at ``cos_repeat ~ s^2/(s^2 + noise^2)``, so the cosine
    of one estimate with the true (smoothed) gradient is about ``sqrt(cos_repeat)``;
    ``agreement = cos_surrogate / sqrt(cos_repeat)`` then estimates the cosine between the
    surrogate gradient and the true-loss gradient ES sees: near 1 the surrogate is faithful,
    well below 1 it is biased (worth a hybrid or ES). It is a cosine, so it is clipped to
    [-1, 1] (sampling noise pushes the ratio past 1). The check passes only when the verdict
    is "faithful": a biased or an undecidable (too noisy) one fails.
    """
    exp = build(cfg)
    batch, model = fixed_batch(exp), exp.model
    model.eval()  # one deterministic loss for BPTT and the population alike
    obj = exp.classification.objective  # the task's, never a Ray-sharded one
    neg = [-g for g in obj.gradient(model, batch)]  # ES estimates point downhill in loss
    params = [p for _, p in perturbed(model)]
    shaping = get_shaping(cfg.es.shaping)
    rows: list[Row] = []
    for pop in populations:
        for sigma in sigmas:
            ests, ties = [], 0.0
            for rep in (1, 2, 3):
                pert = Perturbation(
                    pop, sigma, cfg.es.rank, cfg.es.mode, seed=rep, table=cfg.es.table_size
                )
                f = obj.fitness(model, pert, batch)
                ests.append(estimate(params, pert, shaping(f)))
                ties = max(ties, 1.0 - torch.unique(f).numel() / f.numel())
            cos_s = statistics.fmean(cosine(e, neg) for e in ests)
            rep_cos = statistics.fmean(
                cosine(ests[i], ests[j]) for i, j in ((0, 1), (0, 2), (1, 2))
            )
            ratio = cos_s / math.sqrt(rep_cos) if rep_cos > 0 else math.nan
            agreement = ratio if math.isnan(ratio) else max(-1.0, min(1.0, ratio))
            rows.append({"population": pop, "sigma": sigma, "cos_surrogate": cos_s,
                         "cos_repeat": rep_cos, "fit_ties": ties,
                         "agreement": agreement})  # fmt: skip
    best = max(rows, key=lambda r: r["cos_surrogate"])
    # judged where the ES estimates carry the most signal: a small, noisy population's ratio
    # (cos_repeat near 0) is mostly noise and must not outvote it
    usable = [r for r in rows if r["cos_repeat"] > 0.01]
    a = max(usable, key=lambda r: r["cos_repeat"])["agreement"] if usable else math.nan
    if math.isnan(a):
        tail = "ES estimates are too noisy to judge the surrogate: raise the population"
    elif a > 0.7:
        tail = "the surrogate gradient points where the true loss falls"
    else:
        tail = "the surrogate gradient is BIASED against the true loss: try hybrid or guided-es"
    verdict = (
        f"best cos(ES, surrogate) {best['cos_surrogate']:.3f} at population "
        f"{best['population']}, sigma {best['sigma']:g}; estimated cos(surrogate, true "
        f"gradient) {a:.2f}: {tail}"
    )
    panels = ["cos_surrogate", "cos_repeat", "agreement"]
    faithful = not math.isnan(a) and a > 0.7
    return Finding("grad-quality", faithful, verdict, rows, "population", panels,
                   group="sigma", logx=True)  # fmt: skip


def encoders(
    cfg: Config, kinds: Sequence[str] = ("rate", "deterministic", "repeat"), draws: int = 4
) -> Finding:
    """Learning signal and noise of ES under each input encoding, on one batch.

    ``signal``: std of the population's fitness (what ES ranks on). ``noise``: std of the
    centre's loss over ``draws`` encodings of the same images (0 when deterministic).
    ``consistency``: cosine of two ES estimates with the same perturbations on two encodings
    (1 = the encoder noise does not move the step). ``cos_surrogate``: as in grad-quality.
    """
    if draws < 2:
        raise ConfigError(f"encoders needs draws >= 2 encodings to measure noise, got {draws}")
    rows: list[Row] = []
    for kind in kinds:
        # rate-type encoders read pixels as probabilities: they need unnormalised inputs
        over = {"encoder.kind": kind}
        if kind != "repeat":
            over["data.normalize"] = False  # type: ignore[assignment]
        try:
            exp = build(apply(cfg, over))
        except ConfigError as err:
            rows.append({"encoder": kind, "skipped": str(err)})
            continue
        rows.append({"encoder": kind, **_encoder_stats(exp, draws)})
    done = [r for r in rows if "signal" in r]
    if not done:
        return Finding("encoders", False, "no encoder applies to this data", rows, "encoder",
                       ["signal"], bars=True)  # fmt: skip
    best = max(done, key=lambda r: r["signal"] * r["consistency"])
    shown = "; ".join(f"{r['encoder']}: signal {r['signal']:.4f}, noise {r['noise']:.4f}, "
                      f"consistency {r['consistency']:.2f}" for r in done)  # fmt: skip
    verdict = f"{shown} -> the clearest ES signal comes from encoder.kind={best['encoder']}"
    return Finding("encoders", best["signal"] > 0, verdict, rows, "encoder",
                   ["signal", "noise", "consistency", "cos_surrogate"], bars=True)  # fmt: skip


def _encoder_stats(exp: Experiment, draws: int) -> Row:
    cfg, model = exp.cfg, exp.model
    model.eval()
    n = min(cfg.data.batch_size, len(exp.data.x_train))
    x, y = exp.data.x_train[:n].to(exp.device), exp.data.y_train[:n].to(exp.device)
    gens = [
        torch.Generator(device=exp.device).manual_seed(cfg.trainer.seed + d) for d in range(draws)
    ]
    batches = [(exp.encode(x, g), y) for g in gens]
    obj = exp.classification.objective  # the task's, never a Ray-sharded one
    losses = [obj.centre(model, b)["loss"] for b in batches]
    e = cfg.es
    pert = Perturbation(e.population, e.sigma, e.rank, e.mode, seed=1, table=e.table_size)
    params = [p for _, p in perturbed(model)]
    shaping = get_shaping(cfg.es.shaping)
    fits = [obj.fitness(model, pert, b) for b in batches[:2]]
    ests = [estimate(params, pert, shaping(f)) for f in fits]
    neg = [-g for g in obj.gradient(model, batches[0])]
    return {
        "signal": float(fits[0].std()),
        "noise": statistics.pstdev(losses),
        "consistency": cosine(ests[0], ests[1]),
        "cos_surrogate": cosine(ests[0], neg),
        "layer0_rate": obj.centre(model, batches[0]).get("layer0_rate", math.nan),
    }
