"""Test helpers for anything that speaks DDS.

The whole pytest run is inside scripts/isolated.sh (a loopback-only network namespace,
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST). On top of that every test gets a ROS_DOMAIN_ID
of its own (fixture ``ros_domain`` in conftest.py) so tests never see each other's nodes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

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


def require_dds() -> None:
    """Skip when ROS 2 is not installed, fail on a broken install or outside a loopback-only
    network namespace: no DDS packet may leave this machine."""
    try:
        present = have_rclpy()
    except BrokenRosInstall as e:
        pytest.fail(str(e))
    if not present:
        pytest.skip("rclpy is not installed (pip install -e .[ros])")
    if not in_isolated_netns():
        pytest.fail("DDS tests must run in a loopback-only network namespace: use `make test` or scripts/isolated.sh")


def spawn(module: str, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start ``python -m module args`` as a separate process with the test's ROS env."""
    e = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", module, *args], env=e, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# -- the robot node, as a process, and a test-side client of it -------------------------------
@contextmanager
def node_process(module: str, *args: str):
    """``python -m module args`` as a process of its own, always terminated (then killed) on
    the way out; its console output is kept in ``p.log`` and printed (shown when a test fails)."""
    p = spawn(module, *args)
    try:
        yield p
    finally:
        out, err = stop_process(p)
        p.log = out + err  # the node's console log, for tests that check what it said
        print(f"---- {module} stdout ----\n", out[-4000:], "\n---- stderr ----\n", err[-4000:])


def stop_process(p: subprocess.Popen, timeout: float = 10.0) -> tuple[str, str]:
    """Terminate `p` (kill it if it does not go within `timeout`); its (stdout, stderr)."""
    if p.poll() is None:
        p.terminate()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return out or "", err or ""


def robot_node(*args: str):
    """A robot_node process (``--robot so101`` unless given)."""
    return node_process("robot_rl.ros.robot_node", *(() if "--robot" in args else ("--robot", "so101")),
                        "--diag-hz", "5", *args)


class TestClient:
    """A test-side node in a context of its own, with its own executor; waits fail fast when
    one of ``procs`` (the processes under test) has died."""

    def __init__(self, name: str):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.procs: list = []

    def close(self):
        self.node.destroy_node()
        self.ex.shutdown()
        self.ctx.try_shutdown()

    def spin(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.01)

    def waiting_for(self, what: str) -> str:
        """Extra context for a timed-out wait (subclasses add their latest state)."""
        return ""

    def spin_until(self, pred, timeout: float = 10.0, what: str = "condition"):
        end = time.monotonic() + timeout
        while not pred():
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"{p.args[2]} exited (rc {p.returncode}) while waiting for {what}")
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}{self.waiting_for(what)}")
            self.ex.spin_once(timeout_sec=0.01)

    def call(self, srv_type, name: str, **fields):
        cli = self.node.create_client(srv_type, name)
        assert cli.wait_for_service(timeout_sec=10.0), f"service {name} not available"
        fut = cli.call_async(srv_type.Request(**fields))
        self.spin_until(fut.done, 10.0, f"{name} response")
        self.node.destroy_client(cli)
        return fut.result()


class Client(TestClient):
    """The test-side node: subscribes to everything the robot node publishes."""

    def __init__(self, images=(), image_qos="sensor"):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float32, Float32MultiArray, Float64, String
        from trajectory_msgs.msg import JointTrajectory

        from robot_rl.ros import topics
        super().__init__("test_client")
        self.topics = topics
        n, rq = self.node, topics.reliable_qos(100)
        self.js, self.ee, self.diag, self.action, self.reward, self.success = [], [], [], [], [], []
        self.images = {c: [] for c in images}
        self.sub_js = n.create_subscription(JointState, topics.JOINT_STATES, self.js.append, rq)
        n.create_subscription(PoseStamped, topics.EE_POSE, self.ee.append, rq)
        n.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self.diag.append, rq)
        n.create_subscription(Float32MultiArray, topics.ACTION, self.action.append, rq)
        n.create_subscription(Float32, topics.REWARD, self.reward.append, rq)
        n.create_subscription(Bool, topics.SUCCESS, self.success.append, rq)
        iq = topics.sensor_qos(50) if image_qos == "sensor" else rq
        for c in images:
            n.create_subscription(Image, topics.camera_image(c), self.images[c].append, iq)
        self.pub_action = n.create_publisher(Float32MultiArray, topics.ACTION_COMMAND, rq)
        self.pub_joint = n.create_publisher(JointState, topics.JOINT_COMMAND, rq)
        self.pub_twist = n.create_publisher(TwistStamped, topics.EE_DELTA_COMMAND, rq)
        self.pub_grip = n.create_publisher(Float64, topics.GRIPPER_COMMAND, rq)
        self.pub_traj = n.create_publisher(JointTrajectory, topics.JOINT_TRAJECTORY, rq)
        self.pub_event = n.create_publisher(String, topics.TELEOP_EVENT, rq)

    def wait_ready(self, timeout: float = 20.0):
        """Until the node publishes joint states and all command publishers are matched."""
        pubs = [self.pub_action, self.pub_joint, self.pub_twist, self.pub_grip, self.pub_traj, self.pub_event]
        self.spin_until(lambda: self.sub_js.get_publisher_count() > 0
                        and all(p.get_subscription_count() > 0 for p in pubs), timeout, "robot_node to come up")

    def wait_streaming(self, n: int = 5, timeout: float = 20.0):
        """wait_ready, then until at least n joint states and n ee poses have arrived: a matched
        publisher does not mean data is here yet (a loaded CI machine showed both lists empty
        0.2 s after matching)."""
        self.wait_ready(timeout)
        self.spin_until(lambda: len(self.js) >= n and len(self.ee) >= n, timeout, f"{n} joint states and ee poses")

    def q(self) -> np.ndarray:
        return np.array(self.js[-1].position)

    def diag_value(self, key: str):
        for arr in reversed(self.diag):
            for s in arr.status:
                for kv in s.values:
                    if kv.key == key:
                        return kv.value
        return None

    def joint_command(self, positions: dict):
        from robot_rl.ros import msgs
        self.pub_joint.publish(msgs.joint_state(list(positions), list(positions.values())))

    def stream(self, fn, seconds: float, hz: float = 25.0):
        """Call fn() at hz for `seconds` while spinning."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            fn()
            self.spin(1.0 / hz)


@pytest.fixture
def client_factory(ros_domain):
    made = []

    def make(proc=None, **kw):
        c = Client(**kw)
        c.procs = [proc] if proc is not None else []
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()
