"""Session metrics of a control run: functions of the per-episode outcomes, nothing else.

Two notions of convergence sit side by side.

**The predecessor's** (reproduced exactly so numbers compare): with ``s_j`` in {0, 1} the
success of episode ``j`` of ``N``, the session "converged" at the first ``i >= 20`` whose
window ``s[i : i + 10]`` (all 10 episodes inside the session) has population variance below
0.05 -- for 0/1 outcomes that means 10 equal outcomes in a row, so ten *failures* in a row
count as converged. The post-convergence success rate is the mean of ``s[i:]`` (of the last
10 episodes if it never converged, and then ``i = N``). Its composite score is
``0.4 SR + 0.3 PSR + 0.2 max(0, 1 - i / N) + 0.1 max(0, 1 - var / 0.2)``, where the issue's
"0.4 SR + 0.3 SR" is read as overall then post-convergence success rate, and ``var`` is the
variance of the same post-convergence outcomes.

**Ours** (``stable_at``): the first episode ``i`` from which *every* window of ``W`` episodes
(``rl.converge_window``, 20) that fits in the session has a success rate of at least ``L``
(``rl.converge_level``, 0.8). It needs successes, not just consistency, and it must hold
to the end; ``None`` when no such ``i`` exists. ``stable_success_rate`` is the mean of
``s[i:]``. Efficiency is reported separately: ``last30_steps_ratio``, the mean of
steps / optimal steps over the last 30 episodes (the floor is 1.5).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

LEGACY_START, LEGACY_WINDOW, LEGACY_VAR = 20, 10, 0.05


def legacy_converged_at(success: ArrayLike) -> int | None:
    """The predecessor's convergence episode (0-based), or None."""
    s = np.asarray(success, dtype=np.float64)
    for i in range(LEGACY_START, len(s) - LEGACY_WINDOW + 1):
        if s[i : i + LEGACY_WINDOW].var() < LEGACY_VAR:
            return i
    return None


def legacy_scores(success: ArrayLike) -> dict[str, float | int | None]:
    """``success_rate``, ``converged_at``, ``post_convergence_success_rate`` and
    ``composite`` exactly as the predecessor computed them."""
    s = np.asarray(success, dtype=np.float64)
    n = len(s)
    if n == 0:
        nan = math.nan
        return {"success_rate": nan, "converged_at": None,
                "post_convergence_success_rate": nan, "composite": nan}  # fmt: skip
    at = legacy_converged_at(s)
    post = s[at:] if at is not None else s[-LEGACY_WINDOW:]
    i = at if at is not None else n
    sr, psr = float(s.mean()), float(post.mean())
    composite = 0.4 * sr + 0.3 * psr + 0.2 * max(0.0, 1 - i / n)
    composite += 0.1 * max(0.0, 1 - float(post.var()) / 0.2)
    return {
        "success_rate": sr,
        "converged_at": at,
        "post_convergence_success_rate": psr,
        "composite": composite,
    }


def stable_at(success: ArrayLike, window: int, level: float) -> int | None:
    """Our convergence: first ``i`` with every later full window's success rate >= ``level``."""
    s = np.asarray(success, dtype=np.float64)
    if window < 1 or len(s) < window:
        return None
    rates = np.convolve(s, np.ones(window), "valid") / window  # rates[j] = mean(s[j:j+W])
    ok = rates >= level - 1e-12
    if not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    return int(bad[-1] + 1) if len(bad) else 0


def session_metrics(
    success: ArrayLike,
    steps: ArrayLike,
    optimal: ArrayLike,
    returns: ArrayLike,
    window: int = 20,
    level: float = 0.8,
) -> dict[str, float | int | None]:
    """Every session-level number of one run (see the module docstring)."""
    s = np.asarray(success, dtype=np.float64)
    st = np.asarray(steps, dtype=np.float64)
    ratio = st / np.asarray(optimal, dtype=np.float64)
    out = legacy_scores(s)
    at = stable_at(s, window, level)
    out["stable_at"] = at
    out["stable_success_rate"] = float(s[at:].mean()) if at is not None else math.nan
    last = slice(-30, None)
    out["last30_success_rate"] = float(s[last].mean()) if len(s) else math.nan
    out["last30_steps"] = float(st[last].mean()) if len(st) else math.nan
    tail = ratio[last]
    out["last30_steps_ratio"] = (
        float(tail.mean()) if len(tail) and np.isfinite(tail).all() else math.nan
    )
    r = np.asarray(returns, dtype=np.float64)
    out["mean_return"] = float(r.mean()) if len(r) else math.nan
    return out
