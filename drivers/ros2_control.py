"""Arms behind a ros2_control controller (UR, Franka, ...) on the robot interface.

    robot = Ros2ControlRobot("arm6", joint_map="ur")          # controller from the preset
    robot.connect()                                             # rclpy node + executor thread
    obs = robot.observe()                                       # from /joint_states
    robot.act(np.r_[q, grip], "joint_pos")                      # one control period
    robot.send_trajectory(t, Q)                                 # a policy's chunk, one message
    robot.disconnect()

What goes on the wire (standard messages only, as ros2_control expects them):

- state: ``sensor_msgs/JointState`` on ``/joint_states`` (the joint_state_broadcaster); every
  mapped joint must appear (several publishers may each carry some of them). Observations are
  stamped at receipt (``measured_at``, wall time). No state for ``state_timeout_s``: a latched
  fault and :class:`RobotDisconnected` (the controller keeps holding its last set-point).
- ``interface="trajectory"`` (JointTrajectoryController, e.g. UR's
  ``scaled_joint_trajectory_controller``, Franka's ``fr3_arm_controller``): every ``act`` sends a
  one-point ``trajectory_msgs/JointTrajectory`` on ``<controller>/joint_trajectory`` reaching the
  filtered target one control period after receipt (header stamp 0 = start on receipt; the
  controller interpolates from its current set-point and replaces whatever ran before).
  ``send_trajectory`` sends a whole action chunk as ONE message.
- ``interface="forward"`` (forward_command_controller, e.g. UR's ``forward_position_controller``):
  every ``act`` sends a ``std_msgs/Float64MultiArray`` on ``<controller>/commands`` in the
  controller's joint order. ``send_trajectory`` is then streamed by the driver itself
  (linear interpolation, published every ``1/stream_hz`` s).
- gripper (optional, ``gripper=<topic>``): ``std_msgs/Float64`` with the closure mapped linearly
  onto ``gripper_range`` (open value, closed value); its state is read from the joint
  ``gripper_joint`` of ``/joint_states`` (None: the observation reports the last command).

One topic, two meanings: a robot node publishes the spec's joints on ``/joint_states`` too. A
message stamped with one of our own recent ``measured_at`` values is our observation coming
back and is ignored (counted as ``echoes_ignored``); still, prefer to run the ros2_control
stack in a namespace (``state_topic="/arm/joint_states"``, ``controller="arm/..."``).

Controller joints that the spec does not map (a 7-joint controller under a 6-joint spec) are
part of every command, held at the position measured at connect.

Safety: every ``act`` goes through the robot's :class:`SafetyFilter` exactly as on the twin;
``send_trajectory`` checks every point with the filter's limits (joint limits with margin,
velocity between points, workspace, gripper range; NaN / shape reject the whole chunk) --
the filter's acceleration limit is not applied inside a chunk (the controller interpolates
between points; time-scale the chunk if it is too aggressive). While a forwarded trajectory
runs, ``act(None)`` sends nothing (it must not cut the chunk short); any fresh command
replaces the trajectory, starting from its current set-point. E-stop: one hold (the measured
position) is sent at once, the trajectory and pending gripper points are dropped, and while
it is latched ``act`` / ``send_trajectory`` send that hold only.

rclpy is imported lazily: ``robot_rl`` imports without ROS. ``connect`` uses the default rclpy
context (initialising it when the caller has not; then ``disconnect`` shuts it down again).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from robot_rl.runtime.robot import ActResult, Robot, RobotDisconnected, RobotFault, make_safety_filter
from robot_rl.runtime.safety import (BAD_SHAPE, ESTOP, GRIPPER_LIMIT, JOINT_LIMIT, LIMIT_REJECT, NONFINITE,
                                     VELOCITY, WORKSPACE, SafetyResult)
from robot_rl.spec import CONF_DIR, RobotSpec, resolve_spec

log = logging.getLogger("robot_rl.drivers.ros2_control")

PRESET_DIR = CONF_DIR / "ros2_control"
INTERFACES = ("trajectory", "forward")
DEFAULT_CONTROLLER = {"trajectory": "joint_trajectory_controller", "forward": "forward_position_controller"}
TRAJECTORY = "trajectory"  # ActResult event: a forwarded trajectory is running, nothing sent
STALE = "stale_state"


class Ros2ControlError(RuntimeError):
    """The ros2_control setup does not match the configuration: the message names the cause
    and the fix (missing joints, no controller listening, bad preset)."""


# -- presets and joint maps -------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    name: str
    joint_map: dict[str, str]  # spec joint -> controller joint
    controller: str | None = None  # trajectory controller
    forward_controller: str | None = None
    controller_joints: tuple[str, ...] | None = None  # the controllers' joint order
    description: str = ""


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """A preset by name (``ur``, ``franka``, ``arm6``) or YAML path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = PRESET_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            raise Ros2ControlError(f"unknown ros2_control preset {str(name_or_path)!r}; available: "
                                   f"{available_presets()} (or a YAML path, or spec=controller,... pairs)")
    if not p.exists():
        raise Ros2ControlError(f"ros2_control preset file not found: {p}")
    with open(p) as f:
        d = yaml.safe_load(f)
    if not isinstance(d, Mapping) or not isinstance(d.get("joint_map"), Mapping):
        raise Ros2ControlError(f"ros2_control preset {p} must be a mapping with a 'joint_map' mapping "
                               "(spec joint -> controller joint)")
    known = {"joint_map", "controller", "forward_controller", "controller_joints", "description"}
    if set(d) - known:
        raise Ros2ControlError(f"ros2_control preset {p}: unknown keys {sorted(set(d) - known)}; "
                               f"known: {sorted(known)}")
    cj = d.get("controller_joints")
    return Preset(p.stem, {str(k): str(v) for k, v in d["joint_map"].items()}, d.get("controller"),
                  d.get("forward_controller"), tuple(str(x) for x in cj) if cj else None, d.get("description", ""))


def parse_joint_map(spec: RobotSpec, joint_map: Mapping[str, str] | str | None) -> tuple[dict[str, str], Preset | None]:
    """(spec joint -> controller joint, the preset it came from). `joint_map`: None (identity),
    a dict, ``"a=x,b=y"`` pairs, a preset name or a preset YAML path. Every spec joint must be
    mapped, to distinct controller joints."""
    preset = None
    if joint_map is None:
        m = {n: n for n in spec.joint_names}
    elif isinstance(joint_map, Mapping):
        m = {str(k): str(v) for k, v in joint_map.items()}
    elif isinstance(joint_map, str) and "=" in joint_map:
        m = {}
        for pair in joint_map.split(","):
            k, sep, v = pair.strip().partition("=")
            if not sep or not k.strip() or not v.strip():
                raise Ros2ControlError(f"joint_map {joint_map!r}: expected spec=controller pairs separated by commas")
            m[k.strip()] = v.strip()
    elif isinstance(joint_map, (str, Path)):
        preset = load_preset(joint_map)
        m = dict(preset.joint_map)
    else:
        raise Ros2ControlError(f"joint_map must be a dict, a preset name or spec=controller pairs, got {joint_map!r}")
    src = f"preset {preset.name!r}" if preset else "joint_map"
    missing = [n for n in spec.joint_names if n not in m]
    unknown = [n for n in m if n not in spec.joint_names]
    if missing or unknown:
        raise Ros2ControlError(f"{src} does not fit robot {spec.name!r}: "
                               + "; ".join(([f"spec joints not mapped: {missing}"] if missing else [])
                                           + ([f"not joints of the spec: {unknown}"] if unknown else []))
                               + f" (spec joints: {spec.joint_names})")
    vals = list(m.values())
    dup = sorted({v for v in vals if vals.count(v) > 1})
    if dup:
        raise Ros2ControlError(f"{src}: controller joints {dup} are mapped more than once")
    return {n: m[n] for n in spec.joint_names}, preset


@dataclass
class TrajectoryResult:
    """What ``send_trajectory`` sent (the ActResult of a chunk)."""
    times: np.ndarray  # (n,) time_from_start of each point sent, s
    q: np.ndarray  # (n, dof) joint positions sent (spec order, after the limits)
    gripper: np.ndarray | None  # (n,) gripper closures scheduled, or None
    events: list[str] = field(default_factory=list)  # clamps / rejection / estop
    held: bool = False  # e-stop: a hold was sent instead
    rejected: bool = False  # nothing was sent (NaN, shape, times)
    message: str = ""


@dataclass
class _Plan:
    """A trajectory the controller is executing (as far as this driver knows)."""
    t0: float  # monotonic start
    times: np.ndarray  # (n+1,) from 0 (the start set-point) on
    q: np.ndarray  # (n+1, dof)

    def setpoint(self, now: float) -> np.ndarray:
        t = now - self.t0
        if t >= self.times[-1]:
            return self.q[-1].copy()
        i = int(np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.times) - 2))
        span = self.times[i + 1] - self.times[i]
        w = float(np.clip((t - self.times[i]) / span, 0.0, 1.0)) if span > 0 else 1.0
        return self.q[i] + w * (self.q[i + 1] - self.q[i])

    def running(self, now: float) -> bool:
        return now - self.t0 < self.times[-1]


# -- the driver -------------------------------------------------------------------------------
class Ros2ControlRobot(Robot):
    """A ros2_control arm: state from ``/joint_states``, commands to one controller."""

    supports_trajectory = True  # an action chunk goes to the controller as one plan (robot node /joint_trajectory)

    def __init__(self, robot: str | RobotSpec = "arm6", action_mode: str = "joint_pos", *,
                 safety: Mapping[str, Any] | None = None, control_hz: float | None = None,
                 controller: str | None = None, interface: str = "trajectory",
                 joint_map: Mapping[str, str] | str | None = None, state_topic: str = "/joint_states",
                 state_timeout_s: float = 1.0, connect_timeout_s: float = 10.0, gripper: str | None = None,
                 gripper_joint: str | None = None, gripper_range: Sequence[float] = (0.0, 1.0),
                 stream_hz: float = 100.0, node_name: str = "ros2_control_robot", context=None):
        if interface not in INTERFACES:
            raise Ros2ControlError(f"interface must be one of {list(INTERFACES)}, got {interface!r}")
        spec = resolve_spec(robot, action_mode, (), None, control_hz)  # cameras are camera nodes
        self.spec = spec
        self.action_mode = action_mode
        self.interface = interface
        self.joint_map, self.preset = parse_joint_map(spec, joint_map)
        if controller is None:  # the preset's, else the stock ros2_controllers name
            controller = (self.preset.controller if interface == "trajectory" else self.preset.forward_controller) \
                if self.preset else None
            controller = controller or DEFAULT_CONTROLLER[interface]
        self.controller = controller.strip("/")
        mapped = [self.joint_map[n] for n in spec.joint_names]
        cj = list(self.preset.controller_joints) if self.preset and self.preset.controller_joints else mapped
        lost = [n for n in mapped if n not in cj]
        if lost:
            raise Ros2ControlError(f"preset {self.preset.name!r}: mapped joints {lost} are not in its "
                                   f"controller_joints {cj}")
        self.controller_joints = cj  # command order
        self._spec_col = np.array([cj.index(n) for n in mapped])  # spec joint i -> command column
        self.extra_joints = [n for n in cj if n not in mapped]  # held at their connect position
        self.state_topic = state_topic
        if not state_timeout_s > 0 or not connect_timeout_s > 0:
            raise Ros2ControlError("state_timeout_s and connect_timeout_s must be > 0")
        self.state_timeout_s = float(state_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.gripper_topic = gripper if spec.gripper is not None else None
        if gripper and spec.gripper is None:
            raise Ros2ControlError(f"gripper={gripper!r} given but robot {spec.name!r} has no gripper")
        self.gripper_joint = gripper_joint if self.gripper_topic else None
        g0, g1 = (float(x) for x in gripper_range)
        if not np.isfinite([g0, g1]).all() or g0 == g1:
            raise Ros2ControlError(f"gripper_range must be two different finite values (open, closed), "
                                   f"got {gripper_range}")
        self.gripper_range = (g0, g1)
        if not stream_hz > 0:
            raise Ros2ControlError("stream_hz must be > 0")
        self.stream_hz = float(stream_hz)
        self.node_name = node_name
        self._context = context
        self._safety_kwargs = dict(safety or {})
        self.safety = None
        self._kin = None  # Twin for FK / IK only (no task scene)
        self._node = None
        self._owns_rclpy = False
        self._ex = None
        self._spin: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()  # commands, plan, filter
        self._kin_lock = threading.RLock()  # the kinematics twin's scratch data
        self._state_lock = threading.Lock()
        self._state_cv = threading.Condition(self._state_lock)
        # state arrays over the joints read: controller joints (+ gripper joint)
        self._read_names = cj + ([self.gripper_joint] if self.gripper_joint else [])
        self._ridx = {n: i for i, n in enumerate(self._read_names)}
        nr = len(self._read_names)
        self._pos = np.zeros(nr)
        self._vel = np.zeros(nr)
        self._t_recv = np.full(nr, -np.inf)  # monotonic receipt time per joint
        self._stamp_recv = np.full(nr, np.nan)  # wall receipt time per joint
        self._seen: set[str] = set()
        self._n_states = 0
        self._own_stamps: deque = deque(maxlen=64)  # our recent measured_at values (echo guard)
        self._extra_hold = np.zeros(len(cj))  # command vector template (extra joints' hold)
        self._plan: _Plan | None = None
        self._grip_sched: list[tuple[float, float]] = []  # (monotonic due, closure)
        self._grip_cmd: float | None = None  # last closure commanded
        self._fault: str | None = None
        self._last_sent: np.ndarray | None = None
        self.counts = {"joint_states": 0, "commands": 0, "holds": 0, "holds_unchanged": 0, "trajectories": 0, "trajectory_points": 0,
                       "trajectories_rejected": 0, "stream_msgs": 0, "gripper_msgs": 0, "skipped_running": 0,
                       "skipped_stale": 0, "echoes_ignored": 0}

    # -- interface -----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._node is not None

    @property
    def control_dt(self) -> float:
        return 1.0 / self.spec.control_hz

    @property
    def command_topic(self) -> str:
        return f"/{self.controller}/" + ("joint_trajectory" if self.interface == "trajectory" else "commands")

    def connect(self) -> None:
        if self.is_connected:
            return
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from robot_rl.ros import topics
        from robot_rl.sim.twin import Twin
        self._reset_state()  # nothing from an earlier connection counts
        self._kin = Twin(self.spec)  # kinematics only (FK for ee pose and workspace, IK for ee_delta)
        self.safety = make_safety_filter(self.spec, self.control_dt, fk=self._fk_pos, **self._safety_kwargs)
        from rclpy.signals import SignalHandlerOptions
        from rclpy.utilities import get_default_context
        ctx = self._context if self._context is not None else get_default_context()
        if not ctx.ok():  # nobody initialised it: we do (without taking over SIGINT), and shut it down again
            rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
            self._owns_rclpy = True
        self._ctx = ctx
        try:
            node = rclpy.create_node(self.node_name, context=ctx)
            self._node = node
            rq = topics.reliable_qos(10)  # ros2_control's controllers subscribe with reliable, depth 10
            # state: best effort matches both best-effort and reliable publishers; keep the latest
            node.create_subscription(JointState, self.state_topic, self._on_state, topics.sensor_qos(10))
            if self.interface == "trajectory":
                self._pub = node.create_publisher(JointTrajectory, self.command_topic, rq)
            else:
                self._pub = node.create_publisher(Float64MultiArray, self.command_topic, rq)
            self._pub_grip = node.create_publisher(Float64, self.gripper_topic, rq) if self.gripper_topic else None
            self._timer = node.create_timer(1.0 / self.stream_hz, self._on_timer)
            self._stop.clear()
            self._ex = SingleThreadedExecutor(context=ctx)
            self._ex.add_node(node)
            self._spin = threading.Thread(target=self._spin_loop, name="ros2_control_robot", daemon=True)
            self._spin.start()
            self._wait_ready()
        except BaseException:
            self._teardown()
            raise
        with self._state_lock:
            pos = self._pos.copy()
        self._extra_hold = pos[: len(self.controller_joints)].copy()
        q, g = self._q_measured_now()
        self.safety.reset(q, g)
        self._grip_cmd = g
        self._fault = None

    def disconnect(self) -> None:
        if not self.is_connected:
            return
        try:
            with self._lock:
                self._plan = None
                self._grip_sched.clear()
                if self._fault is None and self._state_age() <= self.state_timeout_s and self._ctx.ok():
                    r = self.safety(None, None, self._measured_q())  # the filter's hold (or the e-stop's)
                    try:
                        self._send(r.q)
                        self.counts["holds"] += 1
                        from rclpy.duration import Duration
                        self._pub.wait_for_all_acked(Duration(seconds=0.5))  # before the publisher goes
                    except Exception as e:  # noqa: BLE001  (best effort: ROS may be shutting down)
                        log.warning(f"ros2_control robot: the hold on disconnect was not sent: {e}")
        finally:
            self._teardown()

    def observe(self, images: bool = True) -> dict[str, np.ndarray]:
        self._need()
        q, g = self._q_measured_now()
        with self._state_lock:
            qd = self._vel[self._spec_col].copy()
        pos, mat = self._fk(q)
        from robot_rl.sim.twin import mat_to_quat
        obs = {"joint_pos": q.astype(np.float32), "joint_vel": qd.astype(np.float32),
               "ee_pos": pos.astype(np.float32), "ee_quat": mat_to_quat(mat).astype(np.float32)}
        if self.spec.gripper is not None:
            obs["gripper"] = np.array([0.0 if g is None else g], np.float32)
        return obs

    def act(self, action: Any = None, mode: str | None = None, *, command_time: float | None = None,
            now: float | None = None) -> ActResult:
        self._need()
        mode = mode or self.action_mode
        with self._lock:
            q_meas, _ = self._q_measured_now()  # raises RobotDisconnected on a stale state
            mono = time.monotonic()
            if self._plan is not None and not self.safety.estopped:
                if action is None and self._plan.running(mono):
                    self.counts["skipped_running"] += 1
                    sp = self._plan.setpoint(mono)
                    g = self._grip_cmd
                    res = SafetyResult(sp, g, [TRAJECTORY])
                    return ActResult(sp, g, self._applied_action(mode, None, res, q_meas), mode, [TRAJECTORY])
                # a fresh command replaces the trajectory (as the controller does), starting from
                # its current set-point; after its end the filter continues from the last point
                sp = self._plan.setpoint(mono)
                finished = not self._plan.running(mono)
                self._plan = None
                self._flush_gripper(mono)  # points already due are sent, later ones dropped
                self.safety.reset(sp, self._grip_cmd)
                if action is None and finished:
                    # the hold after a chunk is its last point (what the controller holds), not the
                    # measured position, which lags it by the tracking error
                    res = self.safety(None, None, sp, now=now, command_time=command_time)
                    self._send(res.q)
                    self.counts["holds"] += 1
                    return ActResult(res.q, res.gripper, self._applied_action(mode, None, res, q_meas), mode,
                                     res.events, res.held, res.rejected)
            res, q_meas = self._filter(mode, action, command_time, now)
            if action is None and self._last_sent is not None and np.array_equal(res.q, self._last_sent):
                # the controller holds its last command by itself: a hold that changes nothing is
                # not re-sent every tick (each message would replace the active trajectory)
                self.counts["holds_unchanged"] += 1
            else:
                self._send(res.q)
            if res.gripper is not None:
                self._send_gripper(res.gripper)
            self.counts["holds" if res.held else "commands"] += 1
            return ActResult(res.q, res.gripper, self._applied_action(mode, action, res, q_meas), mode,
                             res.events, res.held, res.rejected)

    def send_trajectory(self, times_from_start, q, gripper=None) -> TrajectoryResult:
        """Send an action chunk as ONE trajectory: point k is reached `times_from_start[k]` s after
        receipt (strictly increasing, > 0). `q` is (n, dof) in spec order, `gripper` (n,)
        closures or None. Every point is clamped to the joint limits (with the filter's margin),
        its step from the previous point (the first: from the current set-point) to at most
        max_velocity * velocity_scale * (time between the two points), and kept in the
        workspace; NaN / inf, a wrong shape or times that are not > 0 and increasing reject the
        whole chunk (nothing is sent, the current motion goes on). While the e-stop is latched
        only the hold is sent. Returns what was sent."""
        self._need()
        with self._lock:
            self._q_measured_now()  # stale state: raises, sends nothing
            dof = self.spec.dof
            if self.safety.estopped:
                r = self.safety(None, None, self._measured_q())
                self._send(r.q)
                self.counts["holds"] += 1
                return TrajectoryResult(np.array([self.control_dt]), r.q[None].copy(), None, [ESTOP], held=True,
                                        message="e-stop engaged: hold sent")
            try:
                t = np.asarray(times_from_start, dtype=np.float64).reshape(-1)
                Q = np.asarray(q, dtype=np.float64)
                G = None if gripper is None or self.spec.gripper is None else \
                    np.asarray(gripper, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as e:
                return self._reject_traj(BAD_SHAPE, f"not numeric: {e}")
            n = len(t)
            if n == 0 or Q.shape != (n, dof) or (G is not None and G.shape != (n,)):
                return self._reject_traj(BAD_SHAPE, f"need times (n,), q (n, {dof}) and gripper (n,) with n >= 1; got "
                                         f"{t.shape}, {Q.shape}, {None if G is None else G.shape}")
            if not (np.all(np.isfinite(t)) and np.all(np.isfinite(Q)) and (G is None or np.all(np.isfinite(G)))):
                return self._reject_traj(NONFINITE, "NaN or inf in the chunk")
            if t[0] <= 0 or np.any(np.diff(t) <= 0):
                return self._reject_traj(BAD_SHAPE, "times_from_start must be > 0 and strictly increasing")
            f = self.safety
            mono = time.monotonic()
            base = self._plan.setpoint(mono) if self._plan is not None else f.last_target
            events: list[str] = []
            out = (Q < f.lower) | (Q > f.upper)
            if out.any():
                if f.limit_policy == "reject":
                    return self._reject_traj(LIMIT_REJECT, "a point is outside the joint limits")
                Q = np.clip(Q, f.lower, f.upper)
                events.append(JOINT_LIMIT)
            vmax = f.max_step / f.dt  # rad/s per joint
            prev, t_prev = base, 0.0
            v_ev = ws_ev = False
            for k in range(n):
                step = Q[k] - prev
                allowed = vmax * (t[k] - t_prev)
                over = np.abs(step) > allowed
                if over.any():
                    Q[k] = np.where(over, prev + np.sign(step) * allowed, Q[k])
                    v_ev = True
                if f.fk is not None:
                    row = Q[k].copy()
                    qk = self._in_workspace(prev, row)
                    if qk is not row:
                        Q[k] = qk
                        ws_ev = True
                prev, t_prev = Q[k], t[k]
            events += [VELOCITY] * v_ev + [WORKSPACE] * ws_ev
            if G is not None and (np.any(G < 0) or np.any(G > 1)):
                G = np.clip(G, 0.0, 1.0)
                events.append(GRIPPER_LIMIT)
            for e in events:
                f.counters[e] += 1
            if not events:
                f.counters["passed"] += 1
            self._send_trajectory_msg(t, Q)
            self._plan = _Plan(mono, np.r_[0.0, t], np.vstack([base, Q]))
            self._grip_sched = [] if G is None else [(mono + tk, float(gk)) for tk, gk in zip(t, G)]
            self.counts["trajectories"] += 1
            self.counts["trajectory_points"] += n
            return TrajectoryResult(t, Q.copy(), None if G is None else G.copy(), events)

    def estop(self, engage: bool) -> None:
        self._need()
        with self._lock:
            super().estop(engage)
            if engage:  # one hold at the measured position, nothing else moves the arm
                self._plan = None
                self._grip_sched.clear()
                r = self.safety(None, None, self._measured_q())
                self._send(r.q)
                self.counts["holds"] += 1

    @property
    def fault(self) -> str | None:
        return self._fault

    def clear_fault(self) -> str:
        if self._fault is None:
            return "no fault"
        if not self.is_connected:
            raise RobotFault(f"cannot clear {self._fault!r}: not connected")
        age = self._state_age()
        if age > self.state_timeout_s:
            raise RobotFault(f"the fault persists: still no {self.state_topic} for {age:.1f} s")
        with self._lock:
            was, self._fault = self._fault, None
            q, g = self._q_measured_now()
            self._plan = None
            self.safety.reset(q, g)
        return f"cleared {was!r}; holding the measured position until a fresh command"

    def status(self) -> dict[str, str]:
        out = {k: str(v) for k, v in self.counts.items()}
        out.update(controller=self.controller, interface=self.interface, fault=self._fault or "")
        if self.is_connected:
            age = self._state_age()
            out["state_age_ms"] = f"{age * 1e3:.1f}" if np.isfinite(age) else "inf"
            out["trajectory_running"] = str(int(self._plan is not None and self._plan.running(time.monotonic())))
        return out

    @property
    def command_subscribers(self) -> int:
        """How many subscriptions our command topic has (the controller, plus any observer)."""
        return self._pub.get_subscription_count() if self.is_connected else 0

    @property
    def state_age(self) -> float:
        """Seconds since the oldest mapped joint was last received (inf before any)."""
        return self._state_age()

    # -- hooks -----------------------------------------------------------------------------------
    def _measured_q(self) -> np.ndarray:
        with self._state_lock:
            return self._pos[self._spec_col].copy()

    def _targets(self, mode: str, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        g = float(action[-1]) if self.spec.gripper is not None else None
        if mode == "joint_pos":  # raw: out-of-limit targets are the filter's business (and counted)
            return action[: self.spec.dof].copy(), g
        import mujoco
        kin = self._kin
        with self._kin_lock:  # the twin's action maths (delta / IK), from the measured state
            kin.data.qpos[kin.qadr] = self._measured_q()
            mujoco.mj_kinematics(kin.model, kin.data)
            return kin.action_to_targets(mode, action)

    def _fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._kin_lock:
            return self._kin.fk(q)

    def _fk_pos(self, q: np.ndarray) -> np.ndarray:
        return self._fk(q)[0]

    def _ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self._fk(self._measured_q())

    # -- internals -------------------------------------------------------------------------------
    def _need(self) -> None:
        if not self.is_connected:
            raise RobotDisconnected(f"{self.spec.name} on ros2_control is not connected: call connect() first")

    def _reset_state(self) -> None:
        with self._state_lock:
            self._pos[:] = 0.0
            self._vel[:] = 0.0
            self._t_recv[:] = -np.inf
            self._stamp_recv[:] = np.nan
            self._seen.clear()
            self._n_states = 0
            self._own_stamps.clear()
        self.measured_at = None
        self._plan = None
        self._grip_sched = []
        self._grip_cmd = None
        self._fault = None

    def _spin_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._ex.spin_once(timeout_sec=0.05)
            except Exception as e:  # noqa: BLE001
                if self._stop.is_set() or not self._ctx.ok():
                    return
                log.error(f"ros2_control robot: executor error: {e!r}")

    def _teardown(self) -> None:
        self._stop.set()
        if self._spin is not None:
            self._spin.join(timeout=5.0)
        if self._ex is not None:
            self._ex.shutdown(timeout_sec=1.0)
        if self._node is not None:
            self._node.destroy_node()
        if self._owns_rclpy:
            import rclpy
            from rclpy.utilities import get_default_context
            # through rclpy for the default context, so that a later rclpy.init() gets a fresh one
            rclpy.try_shutdown(context=None if self._ctx is get_default_context() else self._ctx)
        self._spin = self._ex = self._node = None
        self._owns_rclpy = False

    def _on_state(self, msg) -> None:
        mono, wall = time.monotonic(), time.time()
        idx = self._ridx
        st = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._state_cv:
            if st > 0 and any(abs(st - x) < 2e-6 for x in self._own_stamps):
                # our own measurement coming back (a robot node republishing observe() on the same
                # topic, stamped with measured_at): never a measurement, or a dead controller
                # would look alive
                self.counts["echoes_ignored"] += 1
                return
            got = False
            for i, name in enumerate(msg.name):
                j = idx.get(name)
                if j is None or i >= len(msg.position):
                    self._seen.add(name)
                    continue
                p = float(msg.position[i])
                if not np.isfinite(p):
                    continue
                self._pos[j] = p
                self._vel[j] = float(msg.velocity[i]) if i < len(msg.velocity) and np.isfinite(msg.velocity[i]) else 0.0
                self._t_recv[j], self._stamp_recv[j] = mono, wall
                self._seen.add(name)
                got = True
            self._n_states += 1
            if got:
                self.counts["joint_states"] += 1
                stamps = self._stamp_recv[: len(self.controller_joints)]
                if not np.isnan(stamps).any():  # the oldest of the joints that make up the measurement
                    self.measured_at = float(stamps.min())
                    self._own_stamps.append(self.measured_at)
                self._state_cv.notify_all()

    def _wait_ready(self) -> None:
        """Until every mapped joint has arrived and the controller subscribes to our commands."""
        end = time.monotonic() + self.connect_timeout_s
        first = None  # when the first message arrived: joints still missing state_timeout_s later never come
        with self._state_cv:
            while any(not np.isfinite(t) for t in self._t_recv):
                now = time.monotonic()
                if first is None and self._n_states:
                    first = now
                if now > end or (first is not None and now - first > self.state_timeout_s):
                    break
                self._state_cv.wait(0.05)
            missing = [n for n, t in zip(self._read_names, self._t_recv) if not np.isfinite(t)]
            n_msgs, seen = self._n_states, sorted(self._seen)
        src = f" (joint_map preset {self.preset.name!r})" if self.preset else ""
        if missing and n_msgs == 0:
            raise Ros2ControlError(
                f"no messages on {self.state_topic} within {self.connect_timeout_s:g} s: is the ros2_control "
                f"joint_state_broadcaster running (`ros2 control list_controllers`), and is ROS_DOMAIN_ID the same?")
        if missing == [self.gripper_joint]:
            raise Ros2ControlError(
                f"{self.state_topic} does not carry the gripper joint {self.gripper_joint!r}: it has {seen}. Name the "
                f"joint that reports the gripper (gripper_joint=..., gripper_range=(open, closed)), or "
                f"gripper_joint=None to report the commanded closure")
        if missing:
            raise Ros2ControlError(
                f"{self.state_topic} does not carry the joints {missing}{src}: it has {seen}. Fix the joint_map "
                f"(a preset such as {available_presets()}, or spec=controller pairs) or the broadcaster's joints")
        while self._pub.get_subscription_count() == 0 or (self._pub_grip is not None
                                                         and self._pub_grip.get_subscription_count() == 0):
            if time.monotonic() > end:
                who = self.command_topic if self._pub.get_subscription_count() == 0 else self.gripper_topic
                raise Ros2ControlError(
                    f"nothing subscribes to {who} within {self.connect_timeout_s:g} s: is the controller "
                    f"{self.controller!r} loaded and active (`ros2 control list_controllers`)? For "
                    f"interface={self.interface!r} it must be a "
                    + ("JointTrajectoryController" if self.interface == "trajectory" else "forward_command_controller"))
            time.sleep(0.02)

    def _state_age(self) -> float:
        with self._state_lock:
            t = self._t_recv[: len(self.controller_joints)]
            return time.monotonic() - float(t.min()) if np.all(np.isfinite(t)) else np.inf

    def _q_measured_now(self) -> tuple[np.ndarray, float | None]:
        """Measured joints (spec order) and gripper closure; RobotDisconnected when stale."""
        if self._fault is not None:
            raise RobotDisconnected(f"{self.spec.name} on ros2_control: {self._fault}")
        age = self._state_age()
        if age > self.state_timeout_s:
            self._fault = (f"no {self.state_topic} for {age:.1f} s (more than state_timeout_s="
                           f"{self.state_timeout_s:g}): controller manager or joint_state_broadcaster gone?")
            self.counts["skipped_stale"] += 1
            with self._lock:
                self._plan = None
                self._grip_sched.clear()
            raise RobotDisconnected(f"{self.spec.name} on ros2_control: {self._fault}; the controller keeps its "
                                    "last set-point, nothing more is sent")
        with self._state_lock:
            q = self._pos[self._spec_col].copy()
            if self.spec.gripper is None:
                g = None
            elif self.gripper_joint is not None and np.isfinite(self._t_recv[-1]):
                o, c = self.gripper_range
                g = float(np.clip((self._pos[-1] - o) / (c - o), 0.0, 1.0))
            else:
                g = self._grip_cmd if self._grip_cmd is not None else 0.0
        return q, g

    def _command_vector(self, q: np.ndarray) -> np.ndarray:
        v = self._extra_hold.copy()
        v[self._spec_col] = q
        return v

    def _send(self, q: np.ndarray) -> None:
        """One command to the controller: the target one control period from now."""
        v = self._command_vector(np.asarray(q, float))
        if self.interface == "trajectory":
            self._send_trajectory_msg(np.array([self.control_dt]), np.asarray(q, float)[None])
        else:
            from std_msgs.msg import Float64MultiArray
            self._pub.publish(Float64MultiArray(data=[float(x) for x in v]))
        self._last_sent = np.array(q, float)

    def _send_trajectory_msg(self, t: np.ndarray, Q: np.ndarray) -> None:
        self._last_sent = None  # after a chunk the next hold is sent, whatever it is
        if self.interface == "forward":  # streamed by the timer from self._plan
            return
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
        msg = JointTrajectory(joint_names=list(self.controller_joints))  # header stamp 0: start on receipt
        pts = []
        for tk, qk in zip(t, Q):
            ns = int(round(float(tk) * 1e9))
            d = Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
            pts.append(JointTrajectoryPoint(positions=[float(x) for x in self._command_vector(qk)], time_from_start=d))
        msg.points = pts
        self._pub.publish(msg)

    def _send_gripper(self, g: float) -> None:
        if self._pub_grip is None:
            self._grip_cmd = g
            return
        if self._grip_cmd is not None and abs(g - self._grip_cmd) < 1e-6:
            return
        from std_msgs.msg import Float64
        o, c = self.gripper_range
        self._pub_grip.publish(Float64(data=float(o + g * (c - o))))
        self._grip_cmd = g
        self.counts["gripper_msgs"] += 1

    def _on_timer(self) -> None:
        """Executor thread: stream a forwarded plan (forward interface) and due gripper points."""
        if not self._lock.acquire(blocking=False):
            return  # a command is being sent right now; next tick
        try:
            if self._fault is not None or self.safety is None or self.safety.estopped:
                return
            now = time.monotonic()
            plan = self._plan
            streaming = plan is not None and now - plan.t0 <= plan.times[-1] + 1.0 / self.stream_hz  # incl. the end
            if self.interface == "forward" and streaming:
                from std_msgs.msg import Float64MultiArray
                v = self._command_vector(plan.setpoint(now))
                self._pub.publish(Float64MultiArray(data=[float(x) for x in v]))
                self.counts["stream_msgs"] += 1
            due = None
            while self._grip_sched and self._grip_sched[0][0] <= now:
                due = self._grip_sched.pop(0)[1]
            if due is not None:
                self._send_gripper(due)
        finally:
            self._lock.release()

    def _flush_gripper(self, now: float) -> None:
        """The plan ends or is replaced: send the latest gripper point already due, drop the rest."""
        due = [g for t, g in self._grip_sched if t <= now + 1e-3]
        self._grip_sched = []
        if due:
            self._send_gripper(due[-1])

    def _reject_traj(self, why: str, message: str) -> TrajectoryResult:
        self.safety.counters["rejected"] += 1
        self.safety.counters[why] += 1
        self.counts["trajectories_rejected"] += 1
        log.warning(f"send_trajectory rejected ({why}): {message}; nothing sent")
        return TrajectoryResult(np.zeros(0), np.zeros((0, self.spec.dof)), None, [why], rejected=True, message=message)

    def _ws_violation(self, q: np.ndarray) -> float:
        f = self.safety
        p = np.asarray(f.fk(q), float).reshape(3)
        if not np.all(np.isfinite(p)):
            return np.inf
        return float(np.sum(np.maximum(f.ws_lo - p, 0) + np.maximum(p - f.ws_hi, 0)))

    def _in_workspace(self, prev: np.ndarray, q: np.ndarray) -> np.ndarray:
        """q when its tool position is inside the workspace box; else the last point inside on
        the segment from prev (bisection), or prev when prev is outside and q is no closer."""
        v = self._ws_violation(q)
        if v == 0.0:
            return q
        v0 = self._ws_violation(prev)
        if v0 > 0.0:
            return q.copy() if v < v0 else prev.copy()
        lo, hi, d = 0.0, 1.0, q - prev
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if self._ws_violation(prev + mid * d) == 0.0:
                lo = mid
            else:
                hi = mid
        return prev + lo * d


def from_options(robot: str | RobotSpec = "arm6", action_mode: str = "joint_pos", safety: dict | None = None,
                 control_hz: float | None = None, *, controller: str | None = None, interface: str | None = None,
                 joint_map: Mapping[str, str] | str | None = None, state_topic: str = "/joint_states",
                 state_timeout_s: float = 1.0, connect_timeout_s: float = 10.0, gripper: str | None = None,
                 gripper_joint: str | None = None, gripper_range: Sequence[float] = (0.0, 1.0),
                 stream_hz: float = 100.0, node_name: str = "ros2_control_robot") -> Ros2ControlRobot:
    """The driver registry's factory (``--driver ros2_control``)."""
    return Ros2ControlRobot(robot, action_mode, safety=safety, control_hz=control_hz, controller=controller,
                            interface=interface or "trajectory", joint_map=joint_map, state_topic=state_topic,
                            state_timeout_s=state_timeout_s, connect_timeout_s=connect_timeout_s, gripper=gripper,
                            gripper_joint=gripper_joint, gripper_range=gripper_range, stream_hz=stream_hz,
                            node_name=node_name)


__all__ = ["Ros2ControlRobot", "Ros2ControlError", "TrajectoryResult", "Preset", "load_preset", "parse_joint_map",
           "available_presets", "from_options", "PRESET_DIR"]
