"""Shared fixtures: one quiet local Ray instance for every test that needs Ray."""

import os

import pytest


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A 2-CPU local Ray (started once per session: startup takes seconds), no dashboard."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp))
    yield ray
    ray.shutdown()
