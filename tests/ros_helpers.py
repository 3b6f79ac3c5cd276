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


class BrokenRosInstall(RuntimeError):
    """rclpy is installed (the ``ros`` extra, or a sourced ROS 2) but does not import."""


def ros_extra_installed() -> bool:
    """True when the ``ros`` extra's rclpy wheel is installed, or ROBOT_RL_REQUIRE_ROS=1
    says that ROS 2 must be there (e.g. a system ROS sourced for CI)."""
    if os.environ.get("ROBOT_RL_REQUIRE_ROS") == "1":
        return True
    from importlib import metadata
    try:
        metadata.distribution("ros-jazzy-rclpy")
        return True
    except metadata.PackageNotFoundError:
        return False


def have_rclpy() -> bool:
    """False only when ROS 2 is simply not installed (its tests are then skipped). An
    installed rclpy that fails to import is a broken install, and raises: skipping 25 ROS
    tests would hide it."""
    try:
        import rclpy  # noqa: F401
        return True
    except Exception as e:
        if ros_extra_installed():
            raise BrokenRosInstall(f"rclpy is installed but does not import ({type(e).__name__}: {e}); "
                                   "check AMENT_PREFIX_PATH and the ros-jazzy-* wheels "
                                   "(or a sourced ROS 2 setup)") from e
        return False


def in_isolated_netns() -> bool:
    from robot_rl.ros.isolation import loopback_only
    return loopback_only()


def spawn(module: str, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start ``python -m module args`` as a separate process with the test's ROS env."""
    e = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", module, *args], env=e, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
