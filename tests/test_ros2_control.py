"""Ros2ControlRobot (drivers/ros2_control.py) against robot_rl.ros.fake_ros2_control: the fake
controller manager runs in a process of its own (MuJoCo twin, real-time), the driver in this
process, and a separate observer node (its own rclpy context) records what goes over the wire.

    scripts/isolated.sh .venv/bin/python -m pytest -q tests/test_ros2_control.py
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from ros_helpers import node_process
from robot_rl.spec import load_spec

SPEC = load_spec("arm6")
UR = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]
FR3 = [f"fr3_joint{i}" for i in range(1, 8)]
UR_TRAJ = "/scaled_joint_trajectory_controller/joint_trajectory"
UR_FWD = "/forward_position_controller/commands"
GRIP = "/gripper/command"
DT = 1.0 / SPEC.control_hz  # 0.05 s
MARGIN = 0.01
VSCALE = 0.5
VMAX = np.array(SPEC.max_velocity) * VSCALE  # rad/s the filter allows
HOME = np.array(SPEC.home)
# every target below is HOME + a small offset whose tool position is well inside the spec's
# workspace (the filter would clamp it otherwise); tests share the fake arm, so each starts by
# going home


# -- no ROS needed ------------------------------------------------------------------------------
def test_presets_and_joint_maps():
    from robot_rl.drivers.ros2_control import Ros2ControlError, Ros2ControlRobot, available_presets, parse_joint_map
    assert {"ur", "franka", "arm6"} <= set(available_presets())
    m, p = parse_joint_map(SPEC, "ur")
    assert list(m.values()) == UR and p.controller == "scaled_joint_trajectory_controller"
    m, _ = parse_joint_map(SPEC, "shoulder_pan=a,shoulder_lift=b,elbow=c,wrist_1=d,wrist_2=e,wrist_3=f")
    assert list(m.values()) == list("abcdef")
    assert parse_joint_map(SPEC, None)[0] == {n: n for n in SPEC.joint_names}
    with pytest.raises(Ros2ControlError, match=r"spec joints not mapped: \['wrist_3'\]"):
        parse_joint_map(SPEC, {n: n + "_j" for n in SPEC.joint_names[:5]})
    with pytest.raises(Ros2ControlError, match="mapped more than once"):
        parse_joint_map(SPEC, {n: "same" for n in SPEC.joint_names})
    with pytest.raises(Ros2ControlError, match="unknown ros2_control preset 'kuka'"):
        parse_joint_map(SPEC, "kuka")
    r = Ros2ControlRobot("arm6", joint_map="franka")  # 7 controller joints under a 6-joint spec
    assert r.controller == "fr3_arm_controller" and r.controller_joints == FR3 and r.extra_joints == ["fr3_joint7"]
    assert Ros2ControlRobot("arm6", joint_map="ur", interface="forward").command_topic == UR_FWD
    assert Ros2ControlRobot("arm6").command_topic == "/joint_trajectory_controller/joint_trajectory"
    with pytest.raises(Ros2ControlError, match="interface"):
        Ros2ControlRobot("arm6", interface="velocity")


def test_fake_trajectory_follower_semantics():
    """The fake's controller maths (the reference the driver is tested against)."""
    from robot_rl.ros.fake_ros2_control import TrajectoryFollower
    f = TrajectoryFollower(["a", "b"], [0.0, 1.0])
    assert f.trajectory(["b", "a"], [1.0, 2.0], [[2.0, 1.0], [3.0, 1.0]], 10.0, 10.0) is None
    assert np.allclose(f.setpoint(10.5), [0.5, 1.5])  # linear from the set-point at receipt
    assert np.allclose(f.setpoint(11.5), [1.0, 2.5]) and np.allclose(f.setpoint(20), [1.0, 3.0])  # holds the end
    # a new one replaces it, from the current set-point
    f.trajectory(["a", "b"], [0.5, 1.0], [[1.0, 1.0], [0.0, 0.0]], 10.5, 10.5)
    assert np.allclose(f.setpoint(10.75), [0.75, 1.25]) and np.allclose(f.setpoint(11.5), [0.0, 0.0])
    assert "unknown joints ['c']" in f.trajectory(["a", "c"], [1.0], [[0, 0]], 12, 12)
    assert "missing" in f.trajectory(["a"], [1.0], [[0]], 12, 12)
    assert "strictly increasing" in f.trajectory(["a", "b"], [1.0, 1.0], [[0, 0], [1, 1]], 12, 12)
    assert "NaN" in f.trajectory(["a", "b"], [1.0], [[np.nan, 0]], 12, 12)
    assert "ended in the past" in f.trajectory(["a", "b"], [1.0], [[5, 5]], 10.0, 12.0)
    assert "3 values" in f.command([1, 2, 3], 12)
    assert np.allclose(f.setpoint(12), [0, 0])  # nothing rejected moved it
    g = TrajectoryFollower(["a", "b"], [0.0, 0.0], allow_partial=True)
    assert g.trajectory(["b"], [1.0], [[2.0]], 0.0, 0.0) is None and np.allclose(g.setpoint(1.0), [0.0, 2.0])


# -- ROS: fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ros_env():
    """A ROS_DOMAIN_ID for this module (the fake controller is shared by its tests); DDS only
    inside a loopback-only network namespace."""
    from ros_helpers import require_dds
    require_dds()
    old = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    os.environ["ROS_DOMAIN_ID"] = str(201 + os.getpid() % 30)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    # the caller's rclpy (as in robot_node): the drivers' nodes share this participant, so a new
    # driver is discovered in milliseconds, not after the next participant announcement (~3 s)
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    yield
    rclpy.try_shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def fake_controller(*args: str):
    return node_process("robot_rl.ros.fake_ros2_control", "--rate", "100", *args)


@pytest.fixture(scope="module")
def fake_ur(ros_env):
    with fake_controller("--joint-map", "ur", "--gripper-topic", GRIP, "--gripper-range", "0,0.8") as p:
        yield p
        assert p.poll() is None, "the fake controller died during the tests"


class Observer:
    """A node of its own (own context, own executor thread) recording the wire."""

    def __init__(self, traj_topic=UR_TRAJ, fwd_topic=UR_FWD):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from robot_rl.ros import topics
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("observer", context=self.ctx)
        rq = topics.reliable_qos(100)
        self.js, self.traj, self.fwd, self.grip, self.diag = [], [], [], [], {}
        n = self.node
        n.create_subscription(JointState, "/joint_states", self.js.append, rq)
        n.create_subscription(JointTrajectory, traj_topic, lambda m: self.traj.append((time.monotonic(), m)), rq)
        n.create_subscription(Float64MultiArray, fwd_topic, lambda m: self.fwd.append((time.monotonic(), m)), rq)
        n.create_subscription(Float64, GRIP, lambda m: self.grip.append(m.data), rq)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, rq)
        self.pub_traj = n.create_publisher(JointTrajectory, traj_topic, rq)
        self.pub_js = n.create_publisher(JointState, "/joint_states", rq)
        self.pub_fwd = n.create_publisher(Float64MultiArray, fwd_topic, rq)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(n)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._spin, daemon=True)
        self._t.start()
        self.wait(lambda: len(self.js) > 3 and self.diag, 20.0, "the fake controller's joint states and diagnostics")

    def _spin(self):
        while not self._stop.is_set():
            self.ex.spin_once(timeout_sec=0.02)

    def _on_diag(self, arr):
        for s in arr.status:
            if s.name == "fake_ros2_control":
                self.diag = {kv.key: kv.value for kv in s.values}

    def wait(self, pred, timeout=10.0, what="condition"):
        end = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < end, f"timed out waiting for {what}"
            time.sleep(0.01)

    def fresh_diag(self) -> dict:
        self.diag = {}
        self.wait(lambda: self.diag, 3.0, "fake diagnostics")
        return self.diag

    def q(self, names=UR) -> np.ndarray:
        m = self.js[-1]
        idx = {n: i for i, n in enumerate(m.name)}
        return np.array([m.position[idx[n]] for n in names])

    def close(self):
        self._stop.set()
        self._t.join(2.0)
        self.node.destroy_node()
        self.ex.shutdown()
        self.ctx.try_shutdown()


@pytest.fixture(scope="module")
def observer(fake_ur):
    o = Observer()
    yield o
    o.close()


@contextmanager
def driver(listeners: int = 2, **kw):
    """A connected driver; waits until `listeners` subscriptions (the fake + the observer)
    match its command topic, so that the observer sees every message."""
    from robot_rl.drivers.ros2_control import Ros2ControlRobot
    kw.setdefault("joint_map", "ur")
    kw.setdefault("gripper", GRIP)
    kw.setdefault("gripper_joint", "gripper_finger_joint")  # the fake's, in 0 (open) .. 0.8 (closed)
    kw.setdefault("gripper_range", (0.0, 0.8))
    kw.setdefault("safety", dict(margin=MARGIN, velocity_scale=VSCALE, timeout_s=None))
    r = Ros2ControlRobot("arm6", **kw)
    r.connect()
    end = time.monotonic() + 10.0
    while r.command_subscribers < listeners:
        assert time.monotonic() < end, "the observer never matched the driver's command topic"
        time.sleep(0.01)
    try:
        yield r
    finally:
        r.disconnect()


@pytest.fixture(scope="module")
def ur(observer):
    """One connected UR-named driver (trajectory interface) shared by the tests below."""
    with driver() as r:
        yield r


def run_for(r, seconds, action=None, hz=SPEC.control_hz, record=None):
    """Call r.act(action) at hz for `seconds` (action: array, callable(t) or None)."""
    t0 = time.monotonic()
    k = 0
    while True:
        t = time.monotonic() - t0
        if t >= seconds:
            return
        a = action(t) if callable(action) else action
        r.act(a, "joint_pos")
        if record is not None:
            record.append((time.monotonic() - t0, r.observe()["joint_pos"].astype(float)))
        k += 1
        time.sleep(max(0.0, t0 + k / hz - time.monotonic()))


def go_home(r, seconds=0.8):
    run_for(r, seconds, np.r_[HOME, 0.0])
    time.sleep(0.2)
    assert np.abs(r.observe()["joint_pos"] - HOME).max() < 0.01


def positions(msg) -> np.ndarray:
    """The single point's positions of a JointTrajectory message."""
    return np.array(msg.points[0].positions)


# -- ROS: the driver against the fake controller -------------------------------------------------------
def test_connect_observe_matches_controller_state(observer):
    from robot_rl.sim.twin import Twin
    with driver() as r:
        assert r.controller == "scaled_joint_trajectory_controller" and r.is_connected
        time.sleep(0.1)
        obs, q_wire = r.observe(), observer.q()
        assert list(observer.js[-1].name) == UR + ["gripper_finger_joint"]  # the controller's names on the wire
        assert np.allclose(obs["joint_pos"], q_wire, atol=2e-3)  # spec order == UR order here
        assert np.allclose(obs["joint_pos"], SPEC.home, atol=0.02)  # the fake starts at home
        assert abs(r.measured_at - time.time()) < 0.5
        pos, _ = Twin(SPEC).fk(obs["joint_pos"].astype(float))  # an independent FK
        assert np.allclose(obs["ee_pos"], pos, atol=1e-5)
        assert obs["gripper"].shape == (1,) and abs(obs["gripper"][0]) < 0.05
        # our own observation coming back on /joint_states (a robot node republishing it) is no
        # measurement: stamped with measured_at, it is ignored
        from robot_rl.ros import msgs
        echo = msgs.joint_state(UR, obs["joint_pos"] + 1.0, stamp=r.measured_at)
        observer.wait(lambda: observer.pub_js.get_subscription_count() >= 2, 5.0, "the driver's state subscription")
        observer.pub_js.publish(echo)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            assert np.abs(r.observe()["joint_pos"] - obs["joint_pos"]).max() < 0.01
            time.sleep(0.002)
        assert r.counts["echoes_ignored"] == 1
        n0 = len(observer.traj)
    observer.wait(lambda: len(observer.traj) > n0, 2.0, "the hold sent on disconnect")
    hold = observer.traj[-1][1]
    assert list(hold.joint_names) == UR and len(hold.points) == 1
    assert np.allclose(positions(hold), q_wire, atol=0.01)


def test_forward_interface(observer):
    with driver(interface="forward") as r:
        assert r.command_topic == UR_FWD
        target = HOME + np.array([-0.2, 0.1, -0.15, 0.1, 0.2, -0.3])
        n0 = len(observer.fwd)
        run_for(r, 1.0, np.r_[target, 0.2])
        time.sleep(0.3)
        assert np.abs(r.observe()["joint_pos"] - target).max() < 0.01
        cmds = [np.array(m.data) for _, m in observer.fwd[n0:]]
        assert len(cmds) >= 15 and all(c.shape == (6,) for c in cmds)  # Float64MultiArray, controller order
        assert np.allclose(cmds[-1], target)
        # a chunk on the forward interface is streamed by the driver
        t = np.array([0.25, 0.5])
        res = r.send_trajectory(t, np.vstack([target + [0.1, 0, 0, 0, 0, 0], target + [0.2, 0, 0, 0, 0, 0]]))
        assert not res.rejected and not res.events
        run_for(r, 0.8, None)  # act(None) must not cut it short
        time.sleep(0.3)
        assert abs(r.observe()["joint_pos"][0] - (target[0] + 0.2)) < 0.01
        assert r.counts["stream_msgs"] >= 20
    d = observer.fresh_diag()
    assert d["commands_rejected"] == "0" and int(d["commands"]) >= 40


def test_act_trajectory_interface_moves_the_twin(observer, ur):
    r = ur
    target = HOME + np.array([0.3, -0.2, 0.25, 0.15, -0.2, 0.4])
    n0 = len(observer.traj)
    base = r.safety.last_target  # where the filter starts: the measured position at connect
    res = r.act(np.r_[target, 0.8], "joint_pos")
    assert "clamped_velocity" in res.events  # 0.4 rad in one 50 ms tick is too fast at velocity_scale 0.5
    run_for(r, 1.3, np.r_[target, 0.8])
    time.sleep(0.3)
    obs = r.observe()
    assert np.abs(obs["joint_pos"] - target).max() < 0.01, obs["joint_pos"] - target
    assert obs["gripper"][0] > 0.5 and any(abs(g - 0.8 * 0.8) < 1e-9 for g in observer.grip)  # closure 0.8 in 0..0.8
    msgs = [m for _, m in observer.traj[n0:]]
    assert len(msgs) >= 20
    for m in msgs:  # one point, the controller's names, one control period, start on receipt
        assert list(m.joint_names) == UR and len(m.points) == 1
        assert m.points[0].time_from_start.sec == 0 and m.points[0].time_from_start.nanosec == 50_000_000
        assert m.header.stamp.sec == 0 and m.header.stamp.nanosec == 0
    q = np.array([positions(m) for m in msgs])
    steps = np.abs(np.diff(np.vstack([base, q]), axis=0))
    assert np.all(steps <= VMAX * DT + 1e-9), steps.max(axis=0)  # the safety filter's rate limit
    assert np.allclose(q[-1], target)
    assert observer.fresh_diag()["trajectories_rejected"] == "0"


def test_send_trajectory_is_followed_in_time_and_replaced(observer, ur):
    r = ur
    go_home(r)
    q0 = HOME
    # a chunk of 10 points over 1 s: pan +0.4, elbow -0.3 (0.4 rad/s: within the limits)
    t = np.linspace(0.1, 1.0, 10)
    s = np.linspace(0.1, 1.0, 10)[:, None]
    Q = q0 + s * np.array([0.4, 0.0, -0.3, 0.0, 0.0, 0.0])
    G = np.linspace(0.1, 1.0, 10)
    n0 = len(observer.traj)
    t_send = time.monotonic()
    res = r.send_trajectory(t, Q, G)
    assert not res.rejected and res.events == [] and np.allclose(res.q, Q)
    rec = []
    run_for(r, 1.3, None, record=rec)  # the control loop keeps ticking with nothing new
    sent = [(tr - t_send, m) for tr, m in observer.traj[n0:]]
    during = [m for dt, m in sent if dt < 1.0 - 0.03]
    assert len(during) == 1 and len(during[0].points) == 10  # ONE message, nothing else while it runs
    tfs = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in during[0].points]
    assert np.allclose(tfs, t)
    assert r.counts["skipped_running"] >= 15
    # followed in time: at each time_from_start within the twin's tracking lag (~0.05 s)
    tt = np.array([x for x, _ in rec])
    qq = np.array([y for _, y in rec])
    for k in range(2, 10):
        j = np.argmin(np.abs(tt - t[k]))
        assert np.abs(qq[j] - Q[k]).max() < 0.04, (t[k], qq[j] - Q[k])
    time.sleep(0.3)
    assert np.abs(r.observe()["joint_pos"] - Q[-1]).max() < 0.01  # then it holds the last point
    assert r.observe()["gripper"][0] > 0.6 and abs(observer.grip[-1] - 0.8) < 1e-9  # gripper points, in time

    # a new trajectory replaces the running one, from its current set-point
    q1 = Q[-1]
    a = q1 + np.array([0.6, 0, 0, 0, 0, 0])
    r.send_trajectory(np.array([1.5]), a[None])
    rec = []
    run_for(r, 0.5, None, record=rec)
    b = q1 + np.array([-0.2, 0, 0, 0, 0, 0])
    res = r.send_trajectory(np.array([0.6]), b[None])
    assert not res.events
    run_for(r, 1.0, None, record=rec)
    time.sleep(0.2)
    pan = np.array([y[0] for _, y in rec])
    assert pan.max() < q1[0] + 0.3  # never went on to the first chunk's end (+0.6)
    assert abs(r.observe()["joint_pos"][0] - b[0]) < 0.01
    d = observer.fresh_diag()
    assert int(d["trajectories_replaced"]) >= 1 and d["trajectories_rejected"] == "0"


def test_limits_clamped_nan_rejected(observer, ur):
    from robot_rl.runtime.safety import BAD_SHAPE, JOINT_LIMIT, NONFINITE, VELOCITY
    up = np.array(SPEC.upper) - MARGIN
    r = ur
    go_home(r)
    q0 = HOME
    # act: out of the joint limits (wrist_3 to 5 rad) -> clamped (and rate limited)
    n0 = len(observer.traj)
    res = r.act(np.r_[q0[:5], 5.0, 0.0], "joint_pos")
    assert JOINT_LIMIT in res.events and res.q[5] <= up[5]
    observer.wait(lambda: len(observer.traj) > n0, 2.0, "the clamped command")
    assert positions(observer.traj[-1][1])[5] <= up[5] + 1e-12
    # act: NaN -> rejected, the last safe target again
    last = res.q.copy()
    res = r.act(np.r_[q0[:5], np.nan, 0.0], "joint_pos")
    assert res.rejected and NONFINITE in res.events and np.allclose(res.q, last)
    res = r.act(np.zeros(3), "joint_pos")
    assert res.rejected and BAD_SHAPE in res.events
    run_for(r, 0.3, None)  # hold
    # send_trajectory: beyond the limit and too fast -> both clamped, point by point
    q1 = r.safety.last_target  # the set-point the chunk starts from (the hold)
    Q = np.vstack([q1, q1, q1])
    Q[0, 5] = q1[5] + 1.0  # 1 rad in 0.1 s: 10 rad/s > 1.57 rad/s
    Q[1, 5] = 5.0  # beyond the limit
    Q[2, 5] = q1[5]
    t = np.array([0.1, 2.0, 3.0])
    res = r.send_trajectory(t, Q)
    assert JOINT_LIMIT in res.events and VELOCITY in res.events and not res.rejected
    assert res.q[0, 5] == pytest.approx(q1[5] + VMAX[5] * 0.1)
    assert res.q[1, 5] <= up[5] and res.q[1, 5] - res.q[0, 5] <= VMAX[5] * 1.9 + 1e-9
    observer.wait(lambda: len(observer.traj[-1][1].points) == 3, 2.0, "the clamped chunk")
    wire = np.array([p.positions for p in observer.traj[-1][1].points])
    assert np.allclose(wire, res.q) and wire[:, 5].max() <= up[5]
    r.estop(True)  # stop that chunk (wrist_3 only); the e-stop itself is tested below
    r.estop(False)
    run_for(r, 0.2, None)
    # NaN / shape / times: the whole chunk is rejected, nothing is sent, the arm stays
    q2 = r.observe()["joint_pos"].astype(float)
    n1 = len(observer.traj)
    bad = np.vstack([q2, q2])
    bad[1, 2] = np.nan
    for args in ((np.array([0.1, 0.2]), bad), (np.array([0.1, 0.2]), np.zeros((2, 5))),
                 (np.array([0.2, 0.1]), np.vstack([q2, q2])), (np.array([0.0]), q2[None]),
                 (np.array([0.1, 0.2]), np.vstack([q2, q2]), np.array([0.5, np.inf]))):
        res = r.send_trajectory(*args)
        assert res.rejected and res.q.shape == (0, 6), args
    time.sleep(0.3)
    assert len(observer.traj) == n1
    assert np.abs(r.observe()["joint_pos"] - q2).max() < 0.01
    assert r.safety.counters["rejected"] >= 7
    assert observer.fresh_diag()["trajectories_rejected"] == "0"  # the driver never sent garbage


def test_estop_holds_on_every_path(observer, ur):
    from robot_rl.runtime.safety import ESTOP
    r = ur
    go_home(r)
    q0 = HOME
    r.send_trajectory(np.array([1.5]), (q0 + [0.6, 0, 0, 0, 0, 0])[None])
    run_for(r, 0.5, None)
    n0 = len(observer.traj)
    r.estop(True)
    q_at = r.observe()["joint_pos"].astype(float)
    observer.wait(lambda: len(observer.traj) > n0, 2.0, "the e-stop hold")
    time.sleep(0.2)
    assert len(observer.traj) == n0 + 1  # exactly one hold
    hold = positions(observer.traj[-1][1])
    assert np.abs(hold - q_at).max() < 0.03 and hold[0] < q0[0] + 0.4
    time.sleep(0.3)
    q_stop = r.observe()["joint_pos"].astype(float)
    time.sleep(0.4)
    assert np.abs(r.observe()["joint_pos"] - q_stop).max() < 2e-3  # stopped, not following the chunk
    # every path sends the hold only
    far = np.r_[q0 + [-0.4, 0.1, -0.1, 0, 0, 0], 1.0]
    res = r.act(far, "joint_pos")
    assert res.held and ESTOP in res.events and np.allclose(res.q, hold)
    res = r.send_trajectory(np.array([0.5, 1.0]), np.vstack([far[:6], far[:6]]))
    assert res.held and ESTOP in res.events and np.allclose(res.q[0], hold)
    res = r.act(None)
    assert res.held and np.allclose(res.q, hold)
    # the command and the chunk each answered with the hold; act(None) with the hold unchanged
    # sends nothing (the controller keeps holding its last command by itself)
    observer.wait(lambda: len(observer.traj) >= n0 + 3, 2.0, "two more holds")
    time.sleep(0.2)
    assert len(observer.traj) == n0 + 3
    for _, m in observer.traj[n0:]:
        assert len(m.points) == 1 and np.allclose(positions(m), hold)
    assert np.abs(r.observe()["joint_pos"] - q_stop).max() < 2e-3
    # released: holds until a fresh command, which then moves the arm
    r.estop(False)
    res = r.act(None)
    assert res.held and not r.safety.estopped
    run_for(r, 0.8, far)
    assert np.abs(r.observe()["joint_pos"] - q_stop).max() > 0.2


def test_missing_joint_no_state_no_controller(fake_ur):
    from robot_rl.drivers.ros2_control import Ros2ControlError, Ros2ControlRobot
    r = Ros2ControlRobot("arm6", joint_map="franka", state_timeout_s=0.5, connect_timeout_s=5.0)
    t0 = time.monotonic()
    with pytest.raises(Ros2ControlError) as e:
        r.connect()
    msg = str(e.value)
    assert "/joint_states" in msg and "fr3_joint1" in msg and "fr3_joint7" in msg and "shoulder_pan_joint" in msg
    assert "franka" in msg and time.monotonic() - t0 < 4.0 and not r.is_connected
    with pytest.raises(Ros2ControlError, match="no messages on /no_such_states"):
        Ros2ControlRobot("arm6", joint_map="ur", state_topic="/no_such_states", connect_timeout_s=1.0).connect()
    with pytest.raises(Ros2ControlError, match="nothing subscribes to /no_such_controller/joint_trajectory"):
        Ros2ControlRobot("arm6", joint_map="ur", controller="no_such_controller", connect_timeout_s=1.0).connect()


def test_fake_rejects_what_ros2_control_rejects(observer):
    from builtin_interfaces.msg import Duration
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    pubs = (observer.pub_traj, observer.pub_fwd)
    observer.wait(lambda: all(p.get_subscription_count() > 0 for p in pubs), 5.0, "the fake's subscriptions")
    d0 = observer.fresh_diag()
    q0 = observer.q()
    pt = JointTrajectoryPoint(positions=[0.5] * 6, time_from_start=Duration(sec=0, nanosec=200_000_000))
    observer.pub_traj.publish(JointTrajectory(joint_names=UR[:5] + ["foo"], points=[pt]))
    pt5 = JointTrajectoryPoint(positions=[0.5] * 5, time_from_start=Duration(sec=0, nanosec=200_000_000))
    observer.pub_traj.publish(JointTrajectory(joint_names=UR[:5], points=[pt5]))  # partial: not allowed
    observer.pub_fwd.publish(Float64MultiArray(data=[0.1] * 5))
    time.sleep(0.5)
    d = observer.fresh_diag()
    assert int(d["trajectories_rejected"]) == int(d0["trajectories_rejected"]) + 2
    assert int(d["commands_rejected"]) == int(d0["commands_rejected"]) + 1
    assert np.abs(observer.q() - q0).max() < 2e-3


def test_franka_names_seven_joint_controller_and_lost_state(ros_env, monkeypatch):
    from rclpy.context import Context

    from robot_rl.drivers.ros2_control import Ros2ControlRobot
    from robot_rl.runtime.robot import RobotDisconnected
    # a domain of its own (the UR fake is still up), and a context the driver initialises itself
    monkeypatch.setenv("ROS_DOMAIN_ID", str(int(os.environ["ROS_DOMAIN_ID"]) + 1))
    with fake_controller("--joint-map", "franka", "--initial", "fr3_joint7=0.785") as p:
        obs_node = Observer(traj_topic="/fr3_arm_controller/joint_trajectory")
        try:
            assert list(obs_node.js[-1].name) == FR3
            ctx = Context()
            r = Ros2ControlRobot("arm6", joint_map="franka", state_timeout_s=0.5, context=ctx,
                                 safety=dict(margin=MARGIN, velocity_scale=VSCALE, timeout_s=None))
            r.connect()
            end = time.monotonic() + 10.0
            while r.command_subscribers < 2:
                assert time.monotonic() < end, "the observer never matched the driver's command topic"
                time.sleep(0.01)
            try:
                assert r.controller == "fr3_arm_controller"
                q0 = r.observe()["joint_pos"].astype(float)
                assert np.allclose(q0, obs_node.q(FR3[:6]), atol=2e-3)
                target = HOME + np.array([0.2, -0.1, 0.1, 0.1, 0.1, 0.2])
                run_for(r, 1.0, np.r_[target, 0.0])
                time.sleep(0.3)
                assert np.abs(r.observe()["joint_pos"] - target).max() < 0.01
                m = obs_node.traj[-1][1]
                assert list(m.joint_names) == FR3 and positions(m)[6] == pytest.approx(0.785)  # joint 7 held
                assert obs_node.q(FR3)[6] == pytest.approx(0.785)
                assert obs_node.fresh_diag()["trajectories_rejected"] == "0"
                # the controller manager goes away: a clear fault, nothing more is sent
                p.terminate()
                p.wait(5)
                time.sleep(0.7)
                with pytest.raises(RobotDisconnected, match="no /joint_states"):
                    r.act(np.r_[target, 0.0], "joint_pos")
                assert "no /joint_states" in r.fault
                with pytest.raises(RobotDisconnected):
                    r.observe()
            finally:
                r.disconnect()
            assert not ctx.ok()  # it initialised the context, so it shut it down
        finally:
            obs_node.close()
