"""Test helpers for anything that speaks DDS.

The whole pytest run is inside scripts/isolated.sh (a loopback-only network namespace,
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST). On top of that every test gets a ROS_DOMAIN_ID
of its own (fixture ``ros_domain`` in conftest.py) so tests never see each other's nodes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def have_rclpy() -> bool:
    try:
        import rclpy  # noqa: F401
        return True
    except Exception:
        return False


def in_isolated_netns() -> bool:
    from robot_rl.ros.isolation import loopback_only
    return loopback_only()


def spawn(module: str, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start ``python -m module args`` as a separate process with the test's ROS env."""
    e = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", module, *args], env=e, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
