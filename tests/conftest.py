import os

os.environ.setdefault("MUJOCO_GL", "egl")

import itertools
import sys
from pathlib import Path

import pytest

from ros_helpers import client_factory  # noqa: F401  (a fixture for the robot-node tests)

sys.path.insert(0, str(Path(__file__).parent))
_domain_ids = itertools.count(1 + (os.getpid() % 20) * 10)


@pytest.fixture
def ros_domain(monkeypatch):
    """A ROS_DOMAIN_ID of this test's own (inherited by subprocesses); refuses to run DDS
    outside a loopback-only network namespace (make test runs pytest inside one)."""
    from ros_helpers import require_dds
    require_dds()
    dom = next(_domain_ids) % 200 + 1
    monkeypatch.setenv("ROS_DOMAIN_ID", str(dom))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return dom


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread():
    """The test models are tiny: one intra-op thread is as fast, and far faster when the
    two cores are shared with subprocesses (OpenMP threads spin on a busy machine)."""
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
