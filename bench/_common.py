"""Shared helpers for the benchmarks: timing, memory, environment, table and JSON output.

Timing: a :func:`window` times ``steps`` calls of a function; a :class:`Rate` is the median
over several windows, so one slow window (a page-fault storm, another process) does not move
the result. The benchmark interleaves the windows of its variants (A B C, A B C, ...) so a
burst of load from elsewhere hits every variant alike instead of one.

Memory: peak resident set size per measured block, read from ``/proc/self/status``
(``VmHWM``) after resetting the high-water mark through ``/proc/self/clear_refs`` (Linux).
Where that reset is not allowed, the process-wide ``ru_maxrss`` is reported instead and the
``rss_resettable`` flag in the environment says so (then peaks only grow from variant to
variant). ``tracemalloc`` is no help here: it sees Python objects, not torch's allocations.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Rate:
    """Calls per second of one timed function: median and every window."""

    windows: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median calls/s over the windows."""
        return statistics.median(self.windows) if self.windows else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median over the windows: a rough noise figure."""
        if len(self.windows) < 2 or self.median == 0:
            return 0.0
        return (max(self.windows) - min(self.windows)) / self.median


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (all cores), from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def window(fn: Callable[[], object], steps: int) -> tuple[float, float]:
    """Run ``fn`` ``steps`` times; return (calls/s, share of the machine others used meanwhile).

    The second number is (machine busy CPU time - this process's CPU time) / (wall time x
    cores): 0 on a quiet machine, 0.5 when other processes kept one of two cores busy, in
    which case the window's rate is not to be trusted. NaN where /proc/stat is missing.
    """
    b0, c0, w0 = _busy_seconds(), time.process_time(), time.perf_counter()
    for _ in range(steps):
        fn()
    wall, own, b1 = time.perf_counter() - w0, time.process_time() - c0, _busy_seconds()
    if b0 is None or b1 is None:
        return steps / wall, float("nan")
    others = max(0.0, (b1 - b0) - own) / (wall * (os.cpu_count() or 1))
    return steps / wall, min(others, 1.0)


def others_busy(seconds: float) -> float:
    """Share of the machine other processes use over the next ``seconds`` (we sleep)."""
    b0 = _busy_seconds()
    time.sleep(seconds)
    b1 = _busy_seconds()
    if b0 is None or b1 is None:
        return 0.0
    return (b1 - b0) / (seconds * (os.cpu_count() or 1))


def wait_until_quiet(max_wait: float, threshold: float = 0.1, sample: float = 5.0) -> float:
    """Wait up to ``max_wait`` s until others use < ``threshold`` of the machine; seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait and others_busy(sample) >= threshold:
        pass
    return time.perf_counter() - t0


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()`` and its wall-clock seconds (for one-off costs such as a cold compile)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# --- memory -------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process; False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_mib() -> float:
    """Current resident set size in MiB (0 where /proc is missing)."""
    kib = _status_kib("VmRSS")
    return (kib or 0) / 1024


def peak_rss_mib() -> float:
    """Peak resident set size in MiB since the last :func:`reset_peak_rss` (or process start)."""
    kib = _status_kib("VmHWM")
    if kib is None:  # no /proc: ru_maxrss is KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = peak // 1024 if sys.platform == "darwin" else peak
    return kib / 1024


# --- environment --------------------------------------------------------------------------


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float:
    """One-minute load average (0 where unknown): above ~0.5 before a run, others are busy."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS deltas start clean."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def environment(packages: Sequence[str]) -> dict[str, Any]:
    """Machine, thread count and package versions, for the JSON record and the table header."""
    return {
        "load_average_1min_at_start": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {name: package_version(name) for name in packages},
        "rss_resettable": reset_peak_rss(),
    }


# --- output -------------------------------------------------------------------------------


def fmt(value: object, digits: int = 2) -> str:
    """A table cell: floats to ``digits`` decimals, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; numeric-looking columns are right-aligned."""
    cells = [[fmt(c) for c in row] for row in rows]
    align = []
    for j in range(len(header)):
        numeric = all(re.fullmatch(r"[-+0-9.×%—e]+", r[j]) for r in cells) if cells else False
        align.append("---:" if numeric else ":---")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, creating parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
