"""The watchdog kills what is left of a driver's process tree once the driver is killed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spikeopt import watchdog

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SCRIPT = Path(watchdog.__file__)

# A stand-in for a driver that started a local Ray: a child, a grandchild (as the raylet's
# agents are), and the watchdog on itself; it prints their pids and waits to be killed.
DRIVER = f"""
import os, subprocess, sys, time
kid = subprocess.Popen(["sleep", "120"])
sh = subprocess.Popen(["sh", "-c", "sleep 120 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
grandkid = int(sh.stdout.readline())
dog = subprocess.Popen([sys.executable, {str(SCRIPT)!r}, str(os.getpid())],
                       start_new_session=True)
print(kid.pid, sh.pid, grandkid, dog.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    return watchdog._stat(pid) is not None


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_kill_9_of_the_driver_takes_its_whole_tree():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in driver.stdout.readline().split()]
    try:
        time.sleep(1.5)  # the watchdog has scanned the tree
        assert all(alive(p) for p in pids[:3])
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert wait_gone(pids, 10) == []  # children, grandchild, and the watchdog itself
    finally:
        for p in [driver.pid, *pids]:
            if alive(p):
                os.kill(p, signal.SIGKILL)


def test_descendants_and_a_vanished_driver():
    kid = subprocess.Popen(["sleep", "30"])
    try:
        tree = watchdog.descendants(os.getpid())
        assert kid.pid in tree and watchdog._stat(kid.pid) == (os.getpid(), tree[kid.pid])
    finally:
        kid.kill()
        kid.wait()
    assert watchdog._stat(kid.pid) is None
    assert watchdog.watch(kid.pid) == 0  # a driver already gone: nothing to watch or kill
