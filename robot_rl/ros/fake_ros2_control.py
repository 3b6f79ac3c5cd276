"""A stand-in for a ros2_control controller manager, backed by the MuJoCo twin.

    python -m robot_rl.ros.fake_ros2_control --robot arm6 --joint-map ur --rate 100 \
        [--controller scaled_joint_trajectory_controller] [--forward-controller forward_position_controller] \
        [--gripper-topic /gripper/command] [--initial fr3_joint7=0.785]

It behaves on the wire as the stock ros2_controllers do, so that robot_rl's ros2_control
driver (and anything else) can be tested without a robot:

- JointTrajectoryController on ``/<controller>/joint_trajectory`` (trajectory_msgs/JointTrajectory,
  the topic interface; no FollowJointTrajectory action: no control_msgs wheel exists). Points
  carry positions only; the set-point is interpolated LINEARLY in position between them (what
  the stock controller's spline interpolation does when a trajectory has no velocities), starting
  from the current set-point at receipt. A new message REPLACES the active trajectory (again from
  the current set-point); after the last point the set-point holds it. Header stamp 0 = start on
  receipt, otherwise at that (wall-clock) time. Rejected, with an error in the log, the previous
  trajectory going on: unknown or duplicate joint names, joints missing (unless
  ``--allow-partial-joints``; then the others hold), a point whose positions do not match the
  joint names, NaN / inf, time_from_start not strictly increasing, a stamped trajectory that
  ended in the past. An empty trajectory (no points) cancels: hold the current set-point.
- forward_command_controller on ``/<forward-controller>/commands`` (std_msgs/Float64MultiArray in
  the controllers' joint order): the set-point jumps there; wrong length or NaN is rejected.
  (In ros2_control only one of the two can own the joints at a time; here the latest message
  of either wins.)
- joint_state_broadcaster: sensor_msgs/JointState on ``/joint_states`` at ``--rate`` with the
  controllers' joint names (``--joint-map``: ``ur`` -> shoulder_pan_joint ..., ``franka`` ->
  fr3_joint1 ...; presets in robot_rl/conf/ros2_control), position, velocity, effort, stamped
  with the wall time of the physics step.
- optional gripper: std_msgs/Float64 on ``--gripper-topic`` in the units of ``--gripper-range``
  (open value, closed value; default 0,1 = the closure); its measured opening is published in
  the same units as the joint ``--gripper-joint`` (default ``gripper_finger_joint``).

Physics: the spec's twin without a task scene, stepped in real time (1 / --rate per tick) with
its position actuators tracking the set-point (so the arm lags a fast set-point a little, like a
real arm under position control). Controller joints the spec has no counterpart for (fr3_joint7
under arm6) are mock hardware: their state is the set-point.

``/diagnostics`` carries the counters (trajectories, rejections, commands) at 5 Hz.
Stops on SIGINT / SIGTERM (also when started in the background, where SIGINT is ignored).

This module deliberately shares no code with robot_rl.drivers.ros2_control: it is the
reference the driver is tested against.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import yaml

from robot_rl.ros.node_args import exit_on_help
from robot_rl.spec import conf_file, load_spec



class TrajectoryFollower:
    """The set-point of one joint group under trajectory / forward commands (pure numpy).

    Times are seconds on one monotonic clock. ``setpoint(now)`` is the commanded position."""

    def __init__(self, joints: list[str], q0, allow_partial: bool = False):
        self.joints = list(joints)
        self.idx = {n: i for i, n in enumerate(self.joints)}
        self.allow_partial = allow_partial
        self._times = np.zeros(1)  # absolute times of the knots
        self._q = np.asarray(q0, float).reshape(1, len(self.joints)).copy()

    def setpoint(self, now: float) -> np.ndarray:
        t, q = self._times, self._q
        if now >= t[-1]:
            return q[-1].copy()
        if now <= t[0]:
            return q[0].copy()
        i = int(np.searchsorted(t, now, side="right") - 1)
        w = (now - t[i]) / (t[i + 1] - t[i]) if t[i + 1] > t[i] else 1.0
        return q[i] + w * (q[i + 1] - q[i])

    def active(self, now: float) -> bool:
        return now < self._times[-1]

    def hold(self, now: float) -> None:
        self._q = self.setpoint(now)[None]
        self._times = np.array([now])

    def command(self, values, now: float) -> str | None:
        """Forward command: jump to `values` (controller joint order). Error text or None."""
        v = np.asarray(values, float).reshape(-1)
        if v.shape != (len(self.joints),):
            return f"command has {v.size} values for {len(self.joints)} joints {self.joints}"
        if not np.all(np.isfinite(v)):
            return "command holds NaN or inf"
        self._q, self._times = v[None].copy(), np.array([now])
        return None

    def trajectory(self, names, tfs, positions, start: float, now: float) -> str | None:
        """Replace the active trajectory. `tfs` (n,) time_from_start, `positions` list of n
        rows (len(names) each), `start` absolute start time. Error text or None."""
        names = list(names)
        unknown = [n for n in names if n not in self.idx]
        if unknown:
            return f"unknown joints {unknown} (controller joints: {self.joints})"
        if len(set(names)) != len(names):
            return f"duplicate joint names {names}"
        missing = [n for n in self.joints if n not in names]
        if missing and not self.allow_partial:
            return f"joints {missing} missing (allow_partial_joints_goal is false)"
        if len(tfs) == 0:
            self.hold(now)
            return None
        tfs = np.asarray(tfs, float)
        for k, p in enumerate(positions):
            if len(p) != len(names):
                return f"point {k} has {len(p)} positions for {len(names)} joints"
        pos = np.asarray(positions, float).reshape(len(tfs), len(names))
        if not np.all(np.isfinite(pos)):
            return "positions hold NaN or inf"
        if np.any(tfs < 0) or np.any(np.diff(tfs) <= 0):
            return f"time_from_start must be >= 0 and strictly increasing, got {tfs.tolist()}"
        if start + tfs[-1] < now:
            return "the trajectory (stamped) ended in the past"
        cur = self.setpoint(now)
        cols = [self.idx[n] for n in names]
        q = np.repeat(cur[None], len(tfs), axis=0)
        q[:, cols] = pos
        times = start + tfs
        if times[0] > now:  # knots: the current set-point now, then the points
            self._times, self._q = np.r_[now, times], np.vstack([cur, q])
        else:  # first point due now or already (a stamped start in the past): sample from now
            later = times > now
            self._times = np.r_[now, times[later]]
            self._q = np.vstack([self._sample(times, q, now)[None], q[later]])
        return None

    @staticmethod
    def _sample(t, q, now):
        i = int(np.clip(np.searchsorted(t, now, side="right") - 1, 0, len(t) - 1))
        if i >= len(t) - 1:
            return q[-1]
        w = (now - t[i]) / (t[i + 1] - t[i])
        return q[i] + w * (q[i + 1] - q[i])


def load_joint_map(spec, name: str | None) -> tuple[dict[str, str], list[str], dict]:
    """(spec joint -> controller joint, controller joint order, the preset dict)."""
    if name in (None, "", "none", "identity"):
        m = {n: n for n in spec.joint_names}
        return m, list(m.values()), {}
    p = conf_file("ros2_control", name, "joint-map preset")
    d = yaml.safe_load(p.read_text())
    m = {str(k): str(v) for k, v in d["joint_map"].items()}
    bad = [n for n in m if n not in spec.joint_names]
    if bad:
        raise ValueError(f"preset {name!r} maps {bad}, which robot {spec.name!r} does not have")
    order = [str(x) for x in d.get("controller_joints") or [m[n] for n in spec.joint_names if n in m]]
    return m, order, d


class FakeRos2Control:
    """The node: twin physics + trajectory / forward controllers + joint state broadcaster."""

    def __init__(self, spec, joint_map: dict[str, str], controller_joints: list[str], *, controller: str,
                 forward_controller: str, rate: float, gripper_topic: str | None = None,
                 gripper_joint: str = "gripper_finger_joint", gripper_range: tuple[float, float] = (0.0, 1.0),
                 allow_partial: bool = False, initial: dict[str, float] | None = None,
                 node_name: str = "controller_manager"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from robot_rl.ros import topics
        from robot_rl.sim.twin import Twin
        self._JointState, self._DiagnosticArray = JointState, DiagnosticArray
        self.rate = float(rate)
        self.period = 1.0 / self.rate
        self.spec = replace(spec, control_hz=self.rate, cameras=())
        self.twin = Twin(self.spec)  # no task scene: the arm on its base
        self.joints = list(controller_joints)
        inv = {c: s for s, c in joint_map.items()}
        self.spec_joint = [inv.get(c) for c in self.joints]  # None: mock joint (no twin counterpart)
        self.twin_cols = np.array([i for i, s in enumerate(self.spec_joint) if s is not None])
        self.twin_idx = np.array([self.spec.joint_names.index(s) for s in self.spec_joint if s is not None])
        initial = dict(initial or {})
        q_home = np.array(self.spec.home, float)
        q0 = np.zeros(len(self.joints))
        for i, s in enumerate(self.spec_joint):
            q0[i] = initial.get(self.joints[i], q_home[self.spec.joint_names.index(s)] if s else 0.0)
        q_twin = q_home.copy()
        q_twin[self.twin_idx] = q0[self.twin_cols]
        self.twin.reset(q_twin)
        self.follower = TrajectoryFollower(self.joints, q0, allow_partial)
        self.gripper_joint = gripper_joint if gripper_topic and self.twin.has_gripper else None
        self.gripper_range = (float(gripper_range[0]), float(gripper_range[1]))
        self._grip = 0.0
        self.lock = threading.Lock()
        self.counts = {"ticks": 0, "overruns": 0, "trajectories": 0, "trajectories_rejected": 0,
                       "trajectories_replaced": 0, "trajectories_empty": 0, "commands": 0, "commands_rejected": 0,
                       "gripper_commands": 0, "gripper_rejected": 0}
        self.last_rejection = ""
        self.node = rclpy.create_node(node_name)
        self.log = self.node.get_logger()
        rq = topics.reliable_qos(10)
        n = self.node
        self.pub_js = n.create_publisher(JointState, topics.JOINT_STATES, rq)
        self.pub_diag = n.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, rq)
        self.traj_topic = f"/{controller.strip('/')}/joint_trajectory"
        self.cmd_topic = f"/{forward_controller.strip('/')}/commands"
        n.create_subscription(JointTrajectory, self.traj_topic, self._on_trajectory, rq)
        n.create_subscription(Float64MultiArray, self.cmd_topic, self._on_command, rq)
        if self.gripper_joint:
            n.create_subscription(Float64, gripper_topic, self._on_gripper, rq)
        n.create_timer(0.2, self._publish_diagnostics)
        self._stop = threading.Event()
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake_ros2_control", daemon=True)

    # -- commands (executor thread) ---------------------------------------------------------------
    def _reject(self, what: str, why: str) -> None:
        self.last_rejection = f"{what}: {why}"
        self.log.error(f"{what} rejected: {why}")

    def _on_trajectory(self, msg) -> None:
        now_m, now_w = time.monotonic(), time.time()
        st = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        start = now_m if st == 0 else now_m + (st - now_w)
        tfs = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        with self.lock:
            was_active = self.follower.active(now_m)
            err = self.follower.trajectory(msg.joint_names, tfs, [list(p.positions) for p in msg.points], start, now_m)
            if err:
                self.counts["trajectories_rejected"] += 1
                self._reject(self.traj_topic, err)
                return
            self.counts["trajectories"] += 1
            self.counts["trajectories_replaced"] += int(was_active)
            self.counts["trajectories_empty"] += int(not msg.points)

    def _on_command(self, msg) -> None:
        with self.lock:
            err = self.follower.command(list(msg.data), time.monotonic())
            if err:
                self.counts["commands_rejected"] += 1
                self._reject(self.cmd_topic, err)
                return
            self.counts["commands"] += 1

    def _on_gripper(self, msg) -> None:
        o, c = self.gripper_range
        g = (float(msg.data) - o) / (c - o)  # closure
        with self.lock:
            if not np.isfinite(g):
                self.counts["gripper_rejected"] += 1
                self._reject("gripper", f"value {msg.data}")
                return
            self._grip = min(1.0, max(0.0, g))
            self.counts["gripper_commands"] += 1

    # -- the real-time loop ----------------------------------------------------------------------
    def start(self) -> None:
        self._publish_state(time.time())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        import mujoco
        tw = self.twin
        try:
            deadline = time.monotonic() + self.period
            while not self._stop.is_set():
                rest = deadline - time.monotonic()
                if rest > 0:
                    time.sleep(rest)
                with self.lock:
                    sp = self.follower.setpoint(time.monotonic())
                    tw.data.ctrl[tw.act[self.twin_idx]] = sp[self.twin_cols]
                    if tw.has_gripper:
                        tw.data.ctrl[tw.grip_act] = (1.0 - self._grip) * tw.half_open
                    mujoco.mj_step(tw.model, tw.data, nstep=tw.n_substeps)
                    self.counts["ticks"] += 1
                self._publish_state(time.time())
                deadline += self.period
                late = time.monotonic() - deadline
                if late > 0:  # skip missed ticks rather than burst (sim time then lags wall time)
                    self.counts["overruns"] += 1
                    deadline += (int(late / self.period) + 1) * self.period
        except Exception as e:  # noqa: BLE001
            if not self._stop.is_set():
                self.failed = e
                self.log.fatal(f"physics loop failed: {e!r}")

    def _publish_state(self, stamp: float) -> None:
        tw = self.twin
        with self.lock:
            sp = self.follower.setpoint(time.monotonic())
            pos, vel, eff = sp.copy(), np.zeros(len(self.joints)), np.zeros(len(self.joints))
            pos[self.twin_cols] = tw.q[self.twin_idx]
            vel[self.twin_cols] = tw.qd[self.twin_idx]
            eff[self.twin_cols] = tw.data.actuator_force[tw.act[self.twin_idx]]
            names = list(self.joints)
            if self.gripper_joint:
                names.append(self.gripper_joint)
                o, c = self.gripper_range
                g = o + tw.gripper_closure() * (c - o)
                pos, vel, eff = np.r_[pos, g], np.r_[vel, 0.0], np.r_[eff, 0.0]
        m = self._JointState()
        sec = int(stamp)
        m.header.stamp.sec, m.header.stamp.nanosec = sec, int((stamp - sec) * 1e9)
        m.name = names
        m.position, m.velocity, m.effort = pos.tolist(), vel.tolist(), eff.tolist()
        try:
            self.pub_js.publish(m)
        except Exception:  # noqa: BLE001  (shutting down)
            pass

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
        with self.lock:
            vals = {k: str(v) for k, v in self.counts.items()}
            vals["trajectory_active"] = str(int(self.follower.active(time.monotonic())))
            vals["last_rejection"] = self.last_rejection
            vals["setpoint"] = ",".join(f"{x:.5f}" for x in self.follower.setpoint(time.monotonic()))
        arr = self._DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        s = DiagnosticStatus(name="fake_ros2_control", hardware_id=self.spec.name, level=DiagnosticStatus.OK,
                             message="ok")
        s.values = [KeyValue(key=k, value=v) for k, v in vals.items()]
        arr.status = [s]
        try:
            self.pub_diag.publish(arr)
        except Exception:  # noqa: BLE001
            pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m robot_rl.ros.fake_ros2_control", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--robot", default="arm6", help="robot spec name or YAML path (the twin)")
    p.add_argument("--joint-map", default="arm6", help="preset (ur, franka, arm6) or YAML path: controller joint names")
    p.add_argument("--controller", default=None,
                   help="trajectory controller name (default: the preset's, else joint_trajectory_controller)")
    p.add_argument("--forward-controller", default=None,
                   help="forward command controller name (default: the preset's, else forward_position_controller)")
    p.add_argument("--rate", type=float, default=100.0, help="controller update / joint_states rate, Hz")
    p.add_argument("--gripper-topic", default=None, help="std_msgs/Float64 gripper command topic (default: none)")
    p.add_argument("--gripper-joint", default="gripper_finger_joint", help="joint name of the gripper in /joint_states")
    p.add_argument("--gripper-range", default="0,1",
                   help="OPEN,CLOSED: gripper command and state units (e.g. 0,0.8 for a Robotiq 2F-85 knuckle)")
    p.add_argument("--allow-partial-joints", action="store_true",
                   help="accept trajectories naming a subset of the joints (the others hold)")
    p.add_argument("--initial", default="", help="initial positions NAME=VALUE,... (controller joint names)")
    p.add_argument("--name", default="controller_manager", help="node name")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    exit_on_help(build_parser, argv[1:])
    os.environ.setdefault("MUJOCO_GL", "egl")
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    if not args.rate > 0:
        print("fake_ros2_control: --rate must be > 0", file=sys.stderr)
        return 2
    try:
        spec = load_spec(args.robot)
        jmap, order, preset = load_joint_map(spec, args.joint_map)
        gr = tuple(float(x) for x in args.gripper_range.split(","))
        if len(gr) != 2 or gr[0] == gr[1]:
            raise ValueError(f"--gripper-range must be OPEN,CLOSED (two different numbers), got {args.gripper_range!r}")
        initial = {}
        for kv in filter(None, (x.strip() for x in args.initial.split(","))):
            k, sep, v = kv.partition("=")
            if not sep:
                raise ValueError(f"--initial expects NAME=VALUE pairs, got {kv!r}")
            initial[k] = float(v)
        unknown = [n for n in initial if n not in order]
        if unknown:
            raise ValueError(f"--initial names {unknown} are not controller joints {order}")
    except ValueError as e:
        print(f"fake_ros2_control: {e}", file=sys.stderr)
        return 2
    controller = args.controller or preset.get("controller") or "joint_trajectory_controller"
    forward = args.forward_controller or preset.get("forward_controller") or "forward_position_controller"
    stop: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored)
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = FakeRos2Control(spec, jmap, order, controller=controller, forward_controller=forward, rate=args.rate,
                               gripper_topic=args.gripper_topic, gripper_joint=args.gripper_joint, gripper_range=gr,
                               allow_partial=args.allow_partial_joints, initial=initial, node_name=args.name)
        grip = f", gripper {args.gripper_topic}" if node.gripper_joint else ""
        node.log.info(f"{spec.name} as ros2_control: {node.traj_topic}, {node.cmd_topic}, /joint_states at "
                      f"{args.rate:g} Hz, joints {order}{grip}")
        node.start()
        while not stop and rclpy.ok() and node.failed is None:
            rclpy.spin_once(node.node, timeout_sec=0.05)
        return 1 if node.failed else 0
    except KeyboardInterrupt:
        return 0
    finally:
        if node is not None:
            node.stop()
            node.node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
