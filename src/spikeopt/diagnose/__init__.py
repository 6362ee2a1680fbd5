"""``spikeopt diagnose``: checks that tell a user whether a setup can learn, and by which method.

Each check is a function ``cfg -> Finding``: the numbers it measured (rows, written as CSV), a
one-line verdict and whether it passed. Nothing here prints; :func:`write` saves a finding's
``<check>.csv`` and ``<check>.png``. The checks, cheapest first:

* ``forward``: one forward pass, every layer's (B, T, N) shape, a finite loss.
* ``subset``: the fixed train/test subsets: class balance, repeatable evaluation, resolution.
* ``activity``: firing rate, dead and saturated neurons, membrane statistics, with advice.
* ``overfit-batch``: BPTT and ES on one fixed batch: does the loss fall?
* ``backprop-sanity``: a short BPTT run: can this model learn this data at all?
* ``grad-quality``: cosine of the ES estimate and the surrogate gradient vs population, sigma.
* ``encoders``: stochastic vs deterministic vs repeat input under ES: learning signal, noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spikeopt.config import Config, choose
from spikeopt.diagnose.checks import Finding, activity, backprop_sanity, forward, subset
from spikeopt.diagnose.gradients import encoders, grad_quality, overfit_batch
from spikeopt.train import outputs as io

Check = Callable[[Config], Finding]

CHECKS: dict[str, Check] = {
    "forward": forward,
    "subset": subset,
    "activity": activity,
    "overfit-batch": overfit_batch,
    "backprop-sanity": backprop_sanity,
    "grad-quality": grad_quality,
    "encoders": encoders,
}


def get_check(name: str) -> Check:
    """The check called ``name``; the error lists the valid names."""
    return CHECKS[choose("--checks", name, CHECKS)]


def write(finding: Finding, out: Path) -> None:
    """``<check>.csv`` (the rows) and ``<check>.png`` (:func:`figure`) in ``out``, both
    written atomically."""
    io.write_csv(out / f"{finding.check}.csv", finding.rows)
    import matplotlib.pyplot as plt

    fig = figure(finding)
    with io.atomic_open(out / f"{finding.check}.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def figure(finding: Finding) -> Any:
    """One panel per ``finding.y`` column against ``finding.x``, one series per value of
    ``finding.group``: grouped bars where x names categories (layers, classes, encoders),
    lines with markers where it is a quantity (steps, populations; the measured values as
    ticks on a log axis, whose default labels overlapped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(finding.y), figsize=(4.5 * len(finding.y), 3.6), squeeze=False)
    groups = sorted({str(r.get(finding.group, "")) for r in finding.rows})
    cats = list(dict.fromkeys(str(r[finding.x]) for r in finding.rows))
    width = 0.8 / max(1, len(groups))
    for ax, key in zip(axes[0], finding.y):
        for k, g in enumerate(groups):
            rows = [r for r in finding.rows if str(r.get(finding.group, "")) == g]
            pts = [(r[finding.x], r[key]) for r in rows if _finite(r.get(key))]
            label = f"{finding.group}={g}" if g else None
            if not pts:
                continue
            xs, ys = zip(*pts)
            if finding.bars:
                at = [cats.index(str(x)) + (k - (len(groups) - 1) / 2) * width for x in xs]
                ax.bar(at, ys, width=width, label=label)
            else:
                ax.plot(xs, ys, marker="o", ms=3, label=label)
        if finding.bars:
            ax.set_xticks(range(len(cats)), cats)
        elif finding.logx:
            ax.set_xscale("log")
            ticks = sorted({float(r[finding.x]) for r in finding.rows})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(finding.x)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3, axis="y" if finding.bars else "both")
        if len(groups) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(f"{finding.check}: {'ok' if finding.ok else 'FAIL'}")
    fig.tight_layout()
    return fig


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


__all__ = ["CHECKS", "Finding", "figure", "get_check", "write"]
