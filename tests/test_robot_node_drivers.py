"""The robot node on hardware drivers, as processes: ros2_control against the twin-backed fake
controller manager. A latched e-stop holds on every path (reset, teleop start, command, policy
chunk), and a /joint_trajectory chunk reaches the controller as ONE message.

    scripts/isolated.sh .venv/bin/python -m pytest -q tests/test_robot_node_drivers.py
"""
from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager

import numpy as np
import pytest

from ros_helpers import client_factory, robot_node, spawn  # noqa: F401  (client_factory: a fixture)
from robot_rl.spec import load_spec

ARM6 = load_spec("arm6")
UR = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]
UR_TRAJ = "/scaled_joint_trajectory_controller/joint_trajectory"


@contextmanager
def fake_ur():
    p = spawn("robot_rl.ros.fake_ros2_control", "--rate", "100", "--joint-map", "ur")
    try:
        yield p
    finally:
        p.terminate()
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        print("---- fake_ros2_control ----\n", out[-2000:], err[-2000:])


def _positions(msgs, names):
    """Latest positions of `names` from a list of JointState messages that have them all."""
    for m in reversed(msgs):
        if all(n in m.name for n in names):
            idx = {n: i for i, n in enumerate(m.name)}
            return np.array([m.position[idx[n]] for n in names])
    return None


def test_ros2_control_robot_node_forwards_chunks_and_estop_holds_every_path(client_factory):
    from builtin_interfaces.msg import Duration
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from robot_rl.ros import msgs, topics
    with fake_ur() as fake, robot_node("--robot", "arm6", "--driver", "ros2_control", "--joint-map", "ur",
                                       "--controller", "scaled_joint_trajectory_controller", "--interface",
                                       "trajectory", "--action-mode", "joint_pos", "--rate", "50",
                                       "--timeout", "0") as proc:
        c = client_factory(proc)
        sent = []  # what reaches the controller's topic
        c.node.create_subscription(JointTrajectory, UR_TRAJ, lambda m: sent.append(m), topics.reliable_qos(100))
        c.spin_until(lambda: _positions(c.js, ARM6.joint_names) is not None, 30.0, "the robot node's joint states")
        c.wait_ready(30.0)
        home = _positions(c.js, UR)
        assert home is not None and np.allclose(home, ARM6.home, atol=0.02)

        # a policy chunk of 3 points -> one JointTrajectory with 3 points and their time_from_start
        n0 = len(sent)
        tr = JointTrajectory(joint_names=["shoulder_pan", "wrist_3"])
        tr.points = [JointTrajectoryPoint(positions=[home[0] + 0.05 * (k + 1), home[5] - 0.05 * (k + 1)],
                                          time_from_start=Duration(sec=0, nanosec=200_000_000 * (k + 1)))
                     for k in range(3)]
        c.pub_traj.publish(tr)
        c.spin(1.2)
        multi = [m for m in sent[n0:] if len(m.points) == 3]
        assert len(multi) == 1, [len(m.points) for m in sent[n0:]]
        t = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in multi[0].points]
        assert np.allclose(np.diff(t), 0.2, atol=0.02) and t[0] == pytest.approx(0.2, abs=0.05)
        # nothing else while it ran (act(None) leaves it running); after its end one hold at its
        # last point, not a message per tick
        after = sent[n0 + 1:]
        assert sent[n0] is multi[0] and len(after) <= 1, [len(m.points) for m in sent[n0:]]
        if after:
            assert np.allclose(after[0].points[0].positions, multi[0].points[-1].positions, atol=1e-6)
        q = _positions(c.js, UR)
        assert q[0] == pytest.approx(home[0] + 0.15, abs=0.03) and q[5] == pytest.approx(home[5] - 0.15, abs=0.03)

        # e-stop: nothing moves the arm on any path
        assert c.call(SetBool, "/robot/estop", data=True).success
        c.spin(0.3)
        q0 = _positions(c.js, UR)
        r = c.call(Trigger, "/robot/reset")
        assert not r.success and "e-stop" in r.message
        c.pub_event.publish(String(data="start seed=1"))
        c.stream(lambda: c.pub_joint.publish(msgs.joint_state(["shoulder_pan"], [home[0] - 0.3])), 0.4)
        c.pub_traj.publish(tr)
        c.spin(0.8)
        assert np.allclose(_positions(c.js, UR), q0, atol=5e-3)
        assert c.call(SetBool, "/robot/estop", data=False).success
        c.spin(0.4)
        assert np.allclose(_positions(c.js, UR), q0, atol=5e-3)  # release alone moves nothing
        assert fake.poll() is None and proc.poll() is None
