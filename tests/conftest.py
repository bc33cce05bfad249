"""Shared fixtures: one Ray for the whole session (ray.init costs seconds), quiet Tune output."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS = Path(__file__).parent
TINY_TASK = str(TESTS / "tiny_task.py")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
