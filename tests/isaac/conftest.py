"""The Isaac Lab twin's tests run in the Isaac venv (`make test-isaac`); elsewhere they skip."""
import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


def pytest_collection_modifyitems(config, items):
    from robot_rl.sim.isaac import in_isaac_runtime
    if in_isaac_runtime():
        return
    skip = pytest.mark.skip(reason="needs the Isaac venv: make test-isaac")
    for item in items:
        if "tests/isaac/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)
