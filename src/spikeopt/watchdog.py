"""Reap the processes of a local Ray whose driver died without shutting it down (Linux).

``kill -9`` of a driver that started a local Ray takes its raylet and GCS with it, but Ray's
``DashboardAgent`` and ``RuntimeEnvAgent`` first report to the GCS that is gone and wait out its
timeout: measured here, they lived 63-64 s after the driver (issue 15.9). :func:`spikeopt.dist.
ensure_ray` starts this file as a script beside the driver (no package import, so no torch: it
costs a few MB). It reads the driver's process tree from ``/proc`` twice a second and, once the
driver is gone, kills what is left of the tree it last saw. A process is known by its pid *and*
start time, so a reused pid is never hit.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid``, or None when it is gone (a zombie
    is gone: it has already handed its children to init)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces or ')'
    return None if fields[0] in "ZX" else (int(fields[1]), int(fields[19]))


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root`` (pid -> start time), from one scan of ``/proc``."""
    kids: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            kids.setdefault(st[0], []).append((int(name), st[1]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, start in kids.get(todo.pop(), []):
            if pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def watch(driver: int, interval: float = 0.5) -> int:
    """Follow ``driver``'s tree until it exits, then SIGKILL the survivors; returns how many."""
    first = _stat(driver)
    if first is None:
        return 0
    tree: dict[int, int] = {}
    while (st := _stat(driver)) is not None and st[1] == first[1]:
        # merged, not replaced: a scan taken as the driver dies finds its children already
        # handed to init, and must not forget them
        tree = {p: t for p, t in tree.items() if (s := _stat(p)) is not None and s[1] == t}
        tree.update(descendants(driver))
        tree.pop(os.getpid(), None)
        time.sleep(interval)
    return kill(tree)


def kill(tree: dict[int, int]) -> int:
    """SIGKILL every process of ``tree`` (pid -> start time) still running as itself."""
    killed = 0
    for pid, start in tree.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:  # it exited between the two looks
                pass
    return killed


if __name__ == "__main__":
    watch(int(sys.argv[1]))
