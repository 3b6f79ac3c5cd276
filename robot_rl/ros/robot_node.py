"""The robot node: a robot (today the MuJoCo twin, later hardware drivers) on ROS 2.

    python -m robot_rl.ros.robot_node --robot so101 --task pick_cube --mode realtime

Publishes the robot's state and cameras per :mod:`robot_rl.ros.topics`, takes commands
(``/action_command``, ``/joint_command``, ``/ee_delta_command``, ``/gripper_command``,
``/joint_trajectory``, ``/teleop/event``) and the ``/robot/estop`` / ``/robot/reset``
services. Every command goes through the robot's safety filter. Modes:

- ``realtime``: a dedicated thread steps the robot at ``--rate`` with absolute-deadline
  sleeps and the latest command (the watchdog holds when it is stale); stamps are wall time.
- ``fast``: steps as fast as possible; stamps are sim time, ``/clock`` is published.
- ``lockstep`` (sim only): each ``/action_command`` advances exactly one control step and the
  next observations are published; after every reset the step-0 observations are published.

See docs/ros_robot_node.md.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from robot_rl.ros import msgs, topics
from robot_rl.ros.node_args import exit_on_help
from robot_rl.spec import ACTION_MODES

MODES = ("realtime", "fast", "lockstep")


# -- commands ------------------------------------------------------------------------------
@dataclass
class _Command:
    """The latest command; ``resolve`` turns it into (action, mode, command_time) for one tick."""
    received: float  # time.monotonic() at receipt (watchdog clock)
    obs_stamp: float  # stamp of the observation it was chosen from

    def resolve(self, node: "RobotNode", t_node: float, now: float):
        raise NotImplementedError


@dataclass
class _ActionCmd(_Command):
    mode: str = "ee_delta"
    action: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def resolve(self, node, t_node, now):
        return self.action, self.mode, self.received


@dataclass
class _JointCmd(_Command):
    q: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gripper: float | None = None

    def resolve(self, node, t_node, now):
        return node._joint_action(self.q, self.gripper), "joint_pos", self.received


@dataclass
class _TwistCmd(_Command):
    lin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    ang: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def resolve(self, node, t_node, now):
        s, dt = node.spec, node.control_dt
        a = np.r_[np.clip(self.lin * dt / s.max_delta_pos, -1, 1), np.clip(self.ang * dt / s.max_delta_rot, -1, 1)]
        if s.gripper is not None:
            g = node._gripper_target()
            a = np.r_[a, g]
        return a, "ee_delta", self.received


@dataclass
class _TrajectoryCmd(_Command):
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # node clock, ascending
    q: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (n, dof)
    grip: np.ndarray | None = None  # (n,) or None
    finished: float | None = None  # monotonic time the last point was reached

    def resolve(self, node, t_node, now):
        t = self.times
        if t_node >= t[-1]:
            i, w = len(t) - 2, 1.0
            if self.finished is None:
                self.finished = now
        else:
            i = int(np.clip(np.searchsorted(t, t_node, side="right") - 1, 0, len(t) - 2))
            span = t[i + 1] - t[i]
            w = float(np.clip((t_node - t[i]) / span, 0.0, 1.0)) if span > 0 else 1.0
        q = self.q[i] + w * (self.q[i + 1] - self.q[i])
        g = None if self.grip is None else float(self.grip[i] + w * (self.grip[i + 1] - self.grip[i]))
        # a plan in progress is a fresh command; after its end the watchdog clock runs
        return node._joint_action(q, g), "joint_pos", now if self.finished is None else self.finished


# -- the node ------------------------------------------------------------------------------
def _import_ros():
    global rclpy, Node, Clock, DiagnosticArray, DiagnosticStatus, KeyValue, TwistStamped, JointState
    global Bool, Float32, Float64, Float32MultiArray, String, SetBool, Trigger, JointTrajectory
    global PoseStamped, CameraInfo, Image
    import rclpy  # noqa: F811
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: F811
    from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: F811
    from rclpy.node import Node  # noqa: F811
    from rosgraph_msgs.msg import Clock  # noqa: F811
    from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: F811
    from std_msgs.msg import Bool, Float32, Float32MultiArray, Float64, String  # noqa: F811
    from std_srvs.srv import SetBool, Trigger  # noqa: F811
    from trajectory_msgs.msg import JointTrajectory  # noqa: F811


def _bridge_driver_logs(ros_logger) -> None:
    """Drivers log through Python's ``logging`` (``robot_rl.drivers...``): show their lines as
    this node's, with their level, like every other line it prints."""
    import logging

    class ToRos(logging.Handler):
        def emit(self, record):
            msg = self.format(record)
            # one call site per severity: rclpy refuses a call site whose severity changes
            if record.levelno >= logging.ERROR:
                ros_logger.error(msg)
            elif record.levelno >= logging.WARNING:
                ros_logger.warning(msg)
            else:
                ros_logger.info(msg)

    lg = logging.getLogger("robot_rl.drivers")
    for h in [h for h in lg.handlers if getattr(h, "robot_rl_ros", False)]:
        lg.removeHandler(h)  # the newest node's logger (one robot node per process in practice)
    h = ToRos()
    h.robot_rl_ros = True
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    lg.propagate = False


class RobotNode:
    """Publishers, subscriptions, services and the control loop around one Robot.

    One thread owns the robot (connect, step, reset, render: an EGL context is current in
    one thread only): the control thread (realtime, fast) or the executor thread (lockstep,
    and the ``--loop timer`` baseline). Callbacks in other threads hand work that touches the
    twin to it (``_in_robot_thread``); small state changes happen under ``self.lock``.
    """

    def __init__(self, robot, mode: str = "realtime", *, rate: float | None = None, image_qos: str = "sensor",
                 camera_hz: float | None = None, diag_hz: float = 2.0, loop: str = "thread",
                 rt_priority: int = 0, spin_us: float = 0.0, node_name: str = "robot_node",
                 wake_on_command: bool | None = None):
        _import_ros()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {list(MODES)}")
        if mode == "lockstep" and not getattr(robot, "simulated", False):
            raise ValueError("lockstep mode needs a simulated robot (the twin)")
        if loop not in ("thread", "timer"):
            raise ValueError(f"loop must be 'thread' or 'timer', got {loop!r}")
        self.robot = robot
        self.spec = robot.spec
        self.mode = mode
        self.rate = float(rate or self.spec.control_hz)
        self.period = 1.0 / self.rate
        self.loop = loop
        self.rt_priority = rt_priority
        self.spin_s = spin_us * 1e-6
        self.is_sim = bool(getattr(robot, "simulated", False))
        self.lock = threading.RLock()
        self.node = rclpy.create_node(node_name)
        self.log = self.node.get_logger()
        _bridge_driver_logs(self.log)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self._requests: deque = deque()  # work for the robot thread: [fn, done, result, error]
        self._ready = False  # robot connected and step 0 published
        self._cmd: _Command | None = None
        self._grip: float | None = None  # latest gripper target (/gripper_command, /joint_command's gripper)
        self._last_stamp = 0.0  # stamp of the latest published observation
        self._periods: deque = deque(maxlen=2000)  # achieved control periods (s, monotonic)
        self._tick_times: deque = deque(maxlen=2000)
        self.counts = {"steps": 0, "overruns": 0, "commands": 0, "ignored_estop": 0, "ignored_lockstep": 0,
                       "rejected_mode": 0, "rejected_trajectory": 0, "unknown_joints": 0, "resets": 0,
                       "gripper_nonfinite": 0, "rejected_gripper_latched": 0}
        self.joint_names = self.spec.joint_names + ([topics.GRIPPER_JOINT] if self.spec.gripper else [])
        self._jidx = {n: i for i, n in enumerate(self.spec.joint_names)}
        self.camera_period = None if not camera_hz else 1.0 / camera_hz
        self._next_cam = -np.inf
        # realtime + twin cameras: render in a worker thread from a copied state, so rendering
        # never delays the control loop (a frame is dropped when the worker is still busy)
        self._async_cams = bool(self.spec.cameras) and mode == "realtime" and self.is_sim and loop == "thread"
        self._render_job = None  # (MjData copy, stamp) handed to the worker
        self._render_buf = None
        self._render_ev = threading.Event()
        self._render_idle = threading.Event()
        self._render_idle.set()
        self._render_thread: threading.Thread | None = None
        self.counts["camera_frames"] = 0
        self.counts["command_wakeups"] = 0
        self.counts["forwarded_trajectories"] = 0
        # wake the control loop when a command arrives (hardware in realtime mode; on the twin
        # an extra step would advance sim time faster than the wall clock)
        self.wake_on_command = (mode == "realtime" and not self.is_sim and loop == "thread"
                                if wake_on_command is None else bool(wake_on_command) and not self.is_sim)
        self._wake = threading.Event()
        self.counts["camera_frames_dropped"] = 0

        n = self.node
        rq = topics.reliable_qos
        # lockstep steps as fast as commands come, with nothing holding the twin back: a writer
        # history of 10 lets a briefly stalled recorder lose the oldest samples of a burst
        # (seen under load). Keep seconds of them there; images are larger, keep fewer.
        depth, img_depth = (10, 10) if mode == "realtime" else (1000, 100)
        self.pub_js = n.create_publisher(JointState, topics.JOINT_STATES, rq(depth))
        self.pub_ee = n.create_publisher(PoseStamped, topics.EE_POSE, rq(depth))
        self.pub_obj = n.create_publisher(Float32MultiArray, topics.OBJECT_STATE, rq(depth))
        self.pub_reward = n.create_publisher(Float32, topics.REWARD, rq(depth))
        self.pub_success = n.create_publisher(Bool, topics.SUCCESS, rq(depth))
        self.pub_action = n.create_publisher(Float32MultiArray, topics.ACTION, rq(depth))
        self.pub_diag = n.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, rq(10))
        self.pub_clock = n.create_publisher(Clock, topics.CLOCK, rq(10)) if mode != "realtime" else None
        iq = topics.sensor_qos() if image_qos == "sensor" else rq(img_depth)
        self.pub_img, self.pub_info, self._cam_info = {}, {}, {}
        for c in self.spec.cameras:
            self.pub_img[c.name] = n.create_publisher(Image, topics.camera_image(c.name), iq)
            self.pub_info[c.name] = n.create_publisher(CameraInfo, topics.camera_info(c.name), iq)
            self._cam_info[c.name] = (c.intrinsics, c.width, c.height)

        n.create_subscription(Float32MultiArray, topics.ACTION_COMMAND, self._on_action, rq(100))
        n.create_subscription(JointState, topics.JOINT_COMMAND, self._on_joint, rq(10))
        n.create_subscription(TwistStamped, topics.EE_DELTA_COMMAND, self._on_twist, rq(10))
        n.create_subscription(Float64, topics.GRIPPER_COMMAND, self._on_gripper, rq(10))
        n.create_subscription(JointTrajectory, topics.JOINT_TRAJECTORY, self._on_trajectory, rq(10))
        n.create_subscription(String, topics.TELEOP_EVENT, self._on_event, rq(10))
        # realtime twin: after a reset for a `start`, announce `reset seed=N stamp=T` so that a
        # realtime recorder starts the episode at the first post-reset observation
        self.pub_event_any = n.create_publisher(String, topics.TELEOP_EVENT, rq(10))
        self.pub_event = self.pub_event_any if mode == "realtime" and self.is_sim else None
        n.create_service(SetBool, topics.ESTOP, self._srv_estop)
        n.create_service(Trigger, topics.RESET, self._srv_reset)
        if diag_hz > 0:
            n.create_timer(1.0 / diag_hz, self._publish_diagnostics)
        self._timer = None

    # -- clocks ---------------------------------------------------------------------------------
    @property
    def control_dt(self) -> float:
        """The robot's control period: the twin's (sim seconds per step) or 1 / rate."""
        dt = getattr(self.robot, "control_dt", None) if self._ready else None
        return float(dt) if dt else self.period

    def clock(self) -> float:
        """The measurement clock: wall time in realtime mode, sim time otherwise."""
        if self.mode == "realtime" or not self.is_sim:
            return time.time()
        return self.robot.sim_time

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Connect the robot, publish the step-0 observation and start the control loop."""
        if self.mode == "lockstep" or (self.mode == "realtime" and self.loop == "timer"):
            self._connect()
            if self.mode == "realtime":
                self._timer = self.node.create_timer(self.period, self._tick)  # the naive baseline
            return
        self._thread = threading.Thread(target=self._run, name="robot_control", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        with self.lock:
            if not self.robot.is_connected:
                self.robot.connect()
            self._publish_obs(None, None)
            self._ready = True
        dt = self.control_dt
        if self.mode == "realtime" and abs(dt - self.period) > 1e-3 * self.period:
            self.log.warning(f"the twin's control period {dt * 1e3:.2f} ms (whole physics substeps) differs from "
                             f"1/--rate = {self.period * 1e3:.2f} ms: sim time runs {dt / self.period:.3f}x wall time")

    def _in_robot_thread(self, fn, timeout: float = 30.0):
        """Run fn in the thread that owns the robot and return its result."""
        if self._thread is None or threading.current_thread() is self._thread:
            with self.lock:
                return fn()
        req = [fn, threading.Event(), None, None]
        self._requests.append(req)
        if not req[1].wait(timeout):
            raise TimeoutError("the control loop did not run the request in time")
        if req[3] is not None:
            raise req[3]
        return req[2]

    def _serve_requests(self) -> None:
        while self._requests:
            req = self._requests.popleft()
            try:
                req[2] = req[0]()
            except Exception as e:  # noqa: BLE001  (handed to the caller)
                req[3] = e
            req[1].set()

    def stop(self) -> None:
        self._stop.set()
        for t in (self._render_thread, self._thread):
            if t is not None:
                t.join(timeout=5.0)

    def destroy(self) -> None:
        self.stop()
        self.node.destroy_node()

    # -- the control loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        from robot_rl.runtime.robot import RobotDisconnected
        try:
            self._loop()
        except RobotDisconnected as e:
            # the robot is gone: one line, the episode ends as failed (the recorder closes it,
            # keeping what it committed), diagnostics say why; the node stays up, idle
            self.failed = e
            self.log.error(f"{e}: safe state, the control loop has stopped")
            try:
                self.pub_event_any.publish(String(data=topics.format_event(
                    "failure", source="robot", reason="disconnected")))
                self._publish_diagnostics()
            except Exception:  # noqa: BLE001
                pass
        except Exception as e:  # noqa: BLE001
            if self._stop.is_set() or not self.node.context.ok():
                return  # shutting down (publishers already gone)
            import traceback
            self.failed = e
            self.log.fatal(f"control loop failed, shutting down: {e!r}\n{traceback.format_exc()}")
            self.node.context.try_shutdown()
        finally:
            self._ready = False
            self._stop.set()
            if self._render_thread is not None:
                self._render_thread.join(timeout=5.0)
            for req in list(self._requests):  # nobody will serve these any more
                req[3] = RuntimeError("robot_node is shutting down")
                req[1].set()
            try:
                with self.lock:
                    self.robot.disconnect()  # in the thread that owns its GL context
            except Exception:  # noqa: BLE001
                pass

    def _loop(self) -> None:
        self._connect()
        if self._async_cams:
            self._render_thread = threading.Thread(target=self._render_loop, name="robot_cameras", daemon=True)
            self._render_thread.start()
        if self.rt_priority > 0 and self.mode == "realtime":
            from robot_rl.runtime.realtime import fifo_for_control_thread
            fifo_for_control_thread(self.rt_priority, self.log)
        if self.mode == "fast":
            while not self._stop.is_set():
                self._tick()
            return
        period, spin = self.period, self.spin_s
        deadline = time.monotonic() + period
        last_tick = -np.inf
        while not self._stop.is_set():
            rest = deadline - time.monotonic()
            woken = False
            if self.wake_on_command:
                # hardware: a fresh command is applied when it arrives (a leader arm streaming at
                # 60 Hz would otherwise wait up to a period), then the grid restarts from it, 1.5
                # periods out, so a command stream at the node's rate locks the loop to it. Never
                # sooner than 0.75 period after the last step: the safety filter's per-step
                # velocity bound then allows at most 1.33x the velocity limit.
                earliest = last_tick + 0.75 * period
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    if self._wake.wait(deadline - now):
                        self._wake.clear()
                        now = time.monotonic()
                        if now < earliest:
                            time.sleep(earliest - now)
                        woken = True
                        break
            elif rest > spin:
                time.sleep(rest - spin)
            while not woken and time.monotonic() < deadline:  # optional short busy-wait for the last `spin` s
                pass
            last_tick = time.monotonic()
            if woken:
                self.counts["command_wakeups"] += 1
                self._tick()
                deadline = time.monotonic() + 1.5 * period
                continue
            if self._tick():
                # a reset published step 0: step 1 comes a full period after it, even when the
                # reset overran the deadline (no catch-up tick a few ms after step 0)
                deadline = time.monotonic()
            deadline += period
            late = time.monotonic() - deadline
            if late > 0:  # overran a whole period: skip the missed ticks, do not burst
                self.counts["overruns"] += 1
                deadline += (int(late / period) + 1) * period

    def _tick(self) -> bool:
        """One control step; True when it served a reset instead (its observation is step 0)."""
        now = time.monotonic()
        if self._tick_times:
            self._periods.append(now - self._tick_times[-1])
        self._tick_times.append(now)
        with self.lock:
            if self._requests:
                resets = self.counts["resets"]
                self._serve_requests()
                if self.counts["resets"] != resets:
                    return True  # a reset published this tick's observation (step 0): no step on top of it
            cmd = self._cmd
            if cmd is None or self.robot.safety.estopped:
                res = self.robot.act(None, now=now)
                stamp_from = self._last_stamp
            else:
                action, mode, ctime = cmd.resolve(self, self.clock(), now)
                res = self.robot.act(action, mode, command_time=ctime, now=now)
                stamp_from = cmd.obs_stamp
            self._publish_obs(res, stamp_from)
        return False

    # -- publishing -------------------------------------------------------------------------------
    def _publish_obs(self, res, action_stamp: float | None) -> None:
        """Publish one control step's observations (joint_states first) and the applied action."""
        r = self.robot
        obs = r.observe(images=False) if self.is_sim else r.observe()
        # hardware: the measurement's own stamp (taken when the bus read returned)
        stamp = self.clock() if self.is_sim or r.measured_at is None else float(r.measured_at)
        js = msgs.joint_state(self.joint_names, np.r_[obs["joint_pos"], obs["gripper"][:1]] if self.spec.gripper
                              else obs["joint_pos"],
                              np.r_[obs["joint_vel"], 0.0] if self.spec.gripper else obs["joint_vel"], stamp)
        self.pub_js.publish(js)
        self.pub_ee.publish(msgs.pose_stamped(obs["ee_pos"], obs["ee_quat"], stamp, "base"))
        if "object_state" in obs:
            self.pub_obj.publish(msgs.stamped_float_array(obs["object_state"], "object_state", stamp))
        if self.is_sim:
            self.pub_reward.publish(Float32(data=float(r.reward)))
            self.pub_success.publish(Bool(data=bool(r.success)))
        if res is not None:
            self.pub_action.publish(msgs.stamped_float_array(res.action, r.action_mode, action_stamp))
            self.counts["steps"] += 1
        if self.pub_clock is not None:
            c = Clock()
            c.clock = msgs.to_time(stamp)
            self.pub_clock.publish(c)
        self._last_stamp = stamp
        if self.spec.cameras and (self.camera_period is None or stamp >= self._next_cam - 1e-9):
            if self.camera_period is not None:  # a grid at the camera rate, re-anchored when behind
                nxt = self._next_cam + self.camera_period
                self._next_cam = nxt if nxt > stamp else stamp + self.camera_period
            if self._async_cams and self._render_thread is not None:
                if self._render_idle.is_set():  # hand the worker a copy of this step's state
                    self._render_idle.clear()
                    self._render_buf = r.copy_state(self._render_buf)
                    self._render_job = (self._render_buf, stamp)
                    self._render_ev.set()
                else:
                    self.counts["camera_frames_dropped"] += 1
            else:
                self._publish_images(r.observe(images=True) if self.is_sim else obs, stamp)

    def _publish_images(self, imgs: dict, stamp: float) -> None:
        for name, pub in self.pub_img.items():
            pub.publish(msgs.image(imgs[f"image_{name}"], stamp, f"camera_{name}"))
            K, w, h = self._cam_info[name]
            self.pub_info[name].publish(msgs.camera_info(K, w, h, stamp, f"camera_{name}"))
        self.counts["camera_frames"] += 1

    def _render_loop(self) -> None:
        renderers: dict = {}
        try:
            while not self._stop.is_set():
                if not self._render_ev.wait(0.1):
                    continue
                self._render_ev.clear()
                data, stamp = self._render_job
                try:
                    self._publish_images(self.robot.render_state(data, renderers), stamp)
                finally:
                    self._render_idle.set()
        except Exception as e:  # noqa: BLE001
            if not self._stop.is_set() and self.node.context.ok():
                self.log.error(f"camera rendering failed, no more images: {e!r}")
        finally:
            for r in renderers.values():
                try:
                    r.close()
                except Exception:  # noqa: BLE001
                    pass

    def _publish_diagnostics(self) -> None:
        if not self._ready:
            return
        per = np.array(self._periods) * 1e3 if self._periods else np.zeros(0)
        ticks = list(self._tick_times)
        achieved = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else 0.0
        with self.lock:  # the driver's state and bus statistics change in the control thread
            if not self._ready:  # the control loop stopped and disconnected the robot since the check above
                return
            safety = self.robot.safety.telemetry()
            sim_t = self.robot.sim_time if self.is_sim else None
            latched, n_latched = self._grip_latched, self.counts["rejected_gripper_latched"]
            fault = self.robot.fault
            driver = self.robot.status()
        safety["gripper_latched_nonfinite"] = int(latched)
        if self.failed is not None and fault is None:
            fault = str(self.failed)
        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        s = DiagnosticStatus(name=f"{self.node.get_name()}: safety", hardware_id=self.spec.name)
        msg = ["e-stop engaged"] if safety["estop_engaged"] else []
        if latched:
            msg.append(f"{self._LATCH_MSG} (rejected_gripper_latched={n_latched})")
        if fault:
            msg.append(f"fault: {fault}")
        s.level = (DiagnosticStatus.ERROR if latched or fault else DiagnosticStatus.WARN if safety["estop_engaged"]
                   else DiagnosticStatus.OK)
        s.message = "; ".join(msg) or "ok"
        s.values = [KeyValue(key=k, value=str(v)) for k, v in {**safety, "fault": fault or "", **driver}.items()]
        loop = DiagnosticStatus(name=f"{self.node.get_name()}: loop", hardware_id=self.spec.name)
        loop.level = DiagnosticStatus.OK
        loop.message = f"{self.mode} {achieved:.1f} Hz"
        vals = {"mode": self.mode, "rate_target_hz": f"{self.rate:g}", "rate_achieved_hz": f"{achieved:.2f}",
                **{k: str(v) for k, v in self.counts.items()}}
        if per.size:
            err = np.abs(per - self.period * 1e3)
            vals.update(period_ms_p50=f"{np.percentile(per, 50):.3f}",
                        period_err_ms_p99=f"{np.percentile(err, 99):.3f}", period_err_ms_max=f"{err.max():.3f}")
        if sim_t is not None:
            vals["sim_time"] = f"{sim_t:.4f}"
        loop.values = [KeyValue(key=k, value=v) for k, v in vals.items()]
        arr.status = [s, loop]
        self.pub_diag.publish(arr)

    # -- helpers ---------------------------------------------------------------------------------
    _LATCH_MSG = ("gripper target is not finite: arm commands that take it (/joint_command without 'gripper', "
                  "/ee_delta_command, /joint_trajectory) are rejected and the arm holds until a finite "
                  "/gripper_command arrives")

    @property
    def _grip_latched(self) -> bool:
        """A non-finite gripper target is latched: every command that takes its gripper value
        from it is rejected by the safety filter (fails safe) until a finite one replaces it."""
        return self.spec.gripper is not None and self._grip is not None and not np.isfinite(self._grip)

    def _set_grip(self, g: float | None, source: str) -> None:
        """Set the gripper target (None: the filter's last one; under self.lock). A non-finite
        one is logged once when the latch engages and once when it clears, not on every
        command it rejects."""
        was = self._grip_latched
        self._grip = g
        if self._grip_latched:
            self.counts["gripper_nonfinite"] += 1
            if not was:
                self.log.error(f"{source}: gripper {g}: {self._LATCH_MSG}")
        elif was:
            now = f"gripper target {g:g}" if g is not None else "gripper target cleared"
            self.log.info(f"{source}: {now}: the non-finite gripper latch is released, arm commands are "
                          f"followed again")

    def _count_latched(self) -> None:
        """An arm command arrived that takes its gripper value from a latched non-finite target."""
        if self._grip_latched:
            self.counts["rejected_gripper_latched"] += 1

    def _gripper_target(self) -> float:
        if self._grip is not None:
            return self._grip
        g = self.robot.safety.last_gripper
        return 0.0 if g is None else g

    def _joint_action(self, q: np.ndarray, gripper: float | None) -> np.ndarray:
        if self.spec.gripper is None:
            return np.asarray(q, float)
        return np.r_[q, self._gripper_target() if gripper is None else gripper]

    def _accepting(self, what: str) -> bool:
        if not self._ready:
            return False
        if self.robot.safety.estopped:
            self.counts["ignored_estop"] += 1
            return False
        if self.mode == "lockstep" and what != "action":
            self.counts["ignored_lockstep"] += 1
            self.log.warning(f"lockstep mode: {what} commands are ignored (send /action_command)",
                             throttle_duration_sec=5.0)
            return False
        return True

    # -- subscriptions ----------------------------------------------------------------------------
    def _on_action(self, msg) -> None:
        with self.lock:
            if not self._accepting("action"):
                if self.mode == "lockstep":  # keep the client's loop alive: advance, holding
                    self._lockstep(None, "ee_delta", None)
                return
            mode = msg.layout.dim[0].label if msg.layout.dim and msg.layout.dim[0].label else self.robot.action_mode
            if mode not in ACTION_MODES or mode not in self.spec.action_modes:
                self.counts["rejected_mode"] += 1
                self.log.error(f"/action_command: action mode {mode!r} not supported by {self.spec.name!r} "
                               f"({list(self.spec.action_modes)}); ignored", throttle_duration_sec=2.0)
                if self.mode == "lockstep":
                    self._lockstep(None, mode, None)
                return
            a = msgs.float_array_values(msg)
            stamp = msgs.float_array_stamp(msg)
            self.counts["commands"] += 1
            if self.mode == "lockstep":
                self._lockstep(a, mode, stamp)
                return
            self._cmd = _ActionCmd(time.monotonic(), self._last_stamp if stamp is None else stamp, mode, a)
            self._wake.set()

    def _lockstep(self, action, mode, stamp) -> None:
        res = self.robot.act(action, mode)
        self._publish_obs(res, self._last_stamp if stamp is None else stamp)

    def _on_joint(self, msg) -> None:
        with self.lock:
            if not self._accepting("joint"):
                return
            q = self.robot.safety.last_target
            g = None
            unknown = []
            for i, name in enumerate(msg.name):
                if i >= len(msg.position):
                    break
                if name in self._jidx:
                    q[self._jidx[name]] = msg.position[i]
                elif name == topics.GRIPPER_JOINT and self.spec.gripper is not None:
                    g = float(msg.position[i])
                else:
                    unknown.append(name)
            if unknown:
                self.counts["unknown_joints"] += 1
                self.log.warning(f"/joint_command: unknown joints {unknown} ignored (joints: {self.joint_names})",
                                 throttle_duration_sec=5.0)
            if g is not None:
                self._set_grip(g, "/joint_command")
            else:
                self._count_latched()
            st = msgs.from_time(msg.header.stamp)
            self.counts["commands"] += 1
            self._cmd = _JointCmd(time.monotonic(), st if st > 0 else self._last_stamp, q, g)
            self._wake.set()

    def _on_twist(self, msg) -> None:
        with self.lock:
            if not self._accepting("ee_delta"):
                return
            t = msg.twist
            st = msgs.from_time(msg.header.stamp)
            self.counts["commands"] += 1
            self._count_latched()
            self._cmd = _TwistCmd(time.monotonic(), st if st > 0 else self._last_stamp,
                                  np.array([t.linear.x, t.linear.y, t.linear.z]),
                                  np.array([t.angular.x, t.angular.y, t.angular.z]))

    def _on_gripper(self, msg) -> None:
        with self.lock:
            if not self._accepting("gripper"):
                return
            self._set_grip(float(msg.data), "/gripper_command")
            self.counts["commands"] += 1
            now = time.monotonic()
            cmd = self._cmd
            stale = cmd is None or isinstance(cmd, _ActionCmd) or (
                self.robot.safety.timeout_s is not None and now - cmd.received > self.robot.safety.timeout_s)
            if stale:  # gripper only: the arm keeps its current target
                self._cmd = _JointCmd(now, self._last_stamp, self.robot.safety.last_target, self._grip)

    def _on_trajectory(self, msg) -> None:
        with self.lock:
            if not self._accepting("trajectory"):
                return
            try:
                cmd = self._trajectory(msg)
            except ValueError as e:
                self.counts["rejected_trajectory"] += 1
                self.log.error(f"/joint_trajectory rejected: {e}")
                return
            self.counts["commands"] += 1
            if self.robot.supports_trajectory and self.mode == "realtime":
                # the robot's controller runs the chunk (one message with time_from_start per
                # point); the ticks then only measure (act(None) leaves it running)
                t0 = self.clock()  # the plan's times are on the node clock (header stamp or receipt)
                tfs = cmd.times[1:] - t0
                res = self.robot.send_trajectory(np.maximum(tfs, 0.0), cmd.q[1:],
                                                 None if cmd.grip is None else cmd.grip[1:])
                if getattr(res, "rejected", False):
                    self.counts["rejected_trajectory"] += 1
                    self.log.error(f"/joint_trajectory rejected by the driver: {getattr(res, 'message', '')}")
                self._cmd = None
                self.counts["forwarded_trajectories"] += 1
                return
            self._count_latched()  # it starts from the current gripper target
            self._cmd = cmd

    def _trajectory(self, msg) -> _TrajectoryCmd:
        if not msg.points:
            raise ValueError("no points")
        cols, gcol = [], None
        for i, name in enumerate(msg.joint_names):
            if name in self._jidx:
                cols.append((i, self._jidx[name]))
            elif name == topics.GRIPPER_JOINT and self.spec.gripper is not None:
                gcol = i
            else:
                raise ValueError(f"unknown joint {name!r} (joints: {self.joint_names})")
        q0 = self.robot.safety.last_target
        g0 = self._gripper_target()
        tfs, qs, gs = [0.0], [q0], [g0]
        for k, p in enumerate(msg.points):
            if len(p.positions) != len(msg.joint_names):
                raise ValueError(f"point {k} has {len(p.positions)} positions for {len(msg.joint_names)} joints")
            pos = np.asarray(p.positions, float)
            if not np.all(np.isfinite(pos)):
                raise ValueError(f"point {k} holds NaN or inf")
            t = p.time_from_start.sec + p.time_from_start.nanosec * 1e-9
            if t < tfs[-1]:
                raise ValueError("time_from_start must not decrease")
            q = qs[-1].copy()
            for i, j in cols:
                q[j] = pos[i]
            tfs.append(t)
            qs.append(q)
            gs.append(float(pos[gcol]) if gcol is not None else gs[-1])
        st = msgs.from_time(msg.header.stamp)
        start = st if st > 0 else self.clock()
        return _TrajectoryCmd(time.monotonic(), self._last_stamp, np.asarray(tfs) + start, np.asarray(qs),
                              np.asarray(gs) if self.spec.gripper is not None else None)

    def _on_event(self, msg) -> None:
        try:
            event, args = topics.parse_event(msg.data)
        except ValueError as e:
            self.log.warning(str(e))
            return
        if event != "start":
            return
        if self._ready and self.robot.safety.estopped:
            self.counts["ignored_estop"] += 1
            self.log.warning(f"teleop event {msg.data!r} ignored: the e-stop is engaged (release it first)")
            return
        seed = None
        if "seed" in args:
            try:
                seed = int(args["seed"])
            except ValueError:
                self.log.error(f"teleop event {msg.data!r}: seed must be an integer")
                return
        if self.is_sim and self._ready:
            try:
                stamp = self.reset(seed)
            except Exception as e:  # noqa: BLE001
                self.log.error(f"reset for {msg.data!r} failed: {e}")
                return
            if self.pub_event is not None:
                t = msgs.to_time(stamp)
                kw = {} if seed is None else {"seed": seed}
                self.pub_event.publish(String(data=topics.format_event(
                    "reset", **kw, stamp=f"{t.sec}.{t.nanosec:09d}")))

    # -- services -----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> float:
        """Reset the twin (in the robot thread) and publish the step-0 observation; returns
        its stamp."""
        def do():
            if self.robot.safety.estopped:  # checked in the robot thread, where resets happen
                raise RuntimeError("the e-stop is engaged: release it before a reset")
            self.robot.reset(seed)
            self._cmd = None
            self._set_grip(None, "reset")
            self._next_cam = -np.inf
            self.counts["resets"] += 1
            if self._async_cams and self._render_thread is not None:
                # the step-0 frame is never dropped: it is what the episode starts with
                self._render_idle.wait(1.0)
            self._publish_obs(None, None)
            return self._last_stamp
        return self._in_robot_thread(do)

    def _clear_fault(self) -> str:
        out = self.robot.clear_fault()
        self._cmd = None  # a command from before the fault never resumes by itself
        self._set_grip(None, "reset")
        self.counts["resets"] += 1
        return out

    def _srv_estop(self, req, resp):
        if not self._ready:
            resp.success, resp.message = False, "robot not connected yet"
            return resp
        with self.lock:
            self.robot.estop(bool(req.data))
            self._cmd = None  # a command from before the change never resumes by itself
            self._set_grip(None, "e-stop")
        resp.success = True
        resp.message = "e-stop engaged: holding" if req.data else "e-stop released: send a fresh command"
        self.log.warning(resp.message)
        return resp

    def _srv_reset(self, req, resp):
        if not self._ready:
            resp.success, resp.message = False, "robot not connected yet"
            return resp
        if self.robot.safety.estopped:
            self.counts["ignored_estop"] += 1
            resp.success, resp.message = False, "the e-stop is engaged: release it (/robot/estop false) before a reset"
            return resp
        if not self.is_sim:  # hardware: a reset clears a latched fault; it never moves the arm
            try:
                resp.message = self._in_robot_thread(self._clear_fault)
                resp.success = True
            except Exception as e:  # noqa: BLE001
                resp.success, resp.message = False, f"reset failed: {e}"
            return resp
        try:
            self.reset(None)
        except Exception as e:  # noqa: BLE001
            resp.success, resp.message = False, f"reset failed: {e}"
            return resp
        resp.success, resp.message = True, f"reset (sim time {self.robot.sim_time:.3f})"
        return resp


# -- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m robot_rl.ros.robot_node", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--robot", default="so101", help="robot spec name or YAML path")
    p.add_argument("--driver", default="sim",
                   help="robot backend: sim (the MuJoCo twin), feetech / dynamixel (servo-bus arms, e.g. the SO-101 "
                        "follower), ros2_control (arms behind a ros2_control controller), or a registered plugin")
    hw = p.add_argument_group("hardware drivers (docs/hardware.md)")
    hw.add_argument("--port", default=None, help="feetech/dynamixel: serial port of the arm (robot-rl find-port)")
    hw.add_argument("--calibration", default=None, help="feetech/dynamixel: calibration file (robot-rl calibrate); "
                                                       "sim: a twin calibration folder (robot-rl sysid fit, "
                                                       "calibrate camera/handeye)")
    hw.add_argument("--hardware", default=None, help="feetech/dynamixel: hardware description (default: the "
                                                    "calibration's, e.g. so101_follower)")
    hw.add_argument("--baudrate", type=int, default=None, help="feetech/dynamixel: bus baud (default: the hardware's)")
    hw.add_argument("--max-relative-target", type=float, default=None,
                    help="feetech/dynamixel: largest joint target step from the measured position, rad (default 0.5)")
    hw.add_argument("--estop-hold", type=float, default=None,
                    help="feetech/dynamixel: s the arm holds after an e-stop or servo alarm before torque goes off")
    hw.add_argument("--controller", default=None, help="ros2_control: controller name")
    hw.add_argument("--interface", default=None, choices=["trajectory", "forward"],
                    help="ros2_control: JointTrajectoryController or forward command controller")
    hw.add_argument("--joint-map", default=None, help="ros2_control: preset (ur, franka) or spec=controller,... pairs")
    hw.add_argument("--driver-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="any other driver option (repeatable)")
    p.add_argument("--task", default="pick_cube", help="twin task (reach, pick_cube, push, insert)")
    p.add_argument("--randomization", default=None,
                   help="sim: domain randomization, a name in robot_rl/conf/randomization or a YAML file (drawn at "
                        "every reset)")
    p.add_argument("--mode", default="realtime", choices=MODES)
    p.add_argument("--action-mode", default="ee_delta", choices=ACTION_MODES,
                   help="the node's action mode (/action and unlabelled /action_command)")
    p.add_argument("--rate", type=float, default=None, help="control rate in Hz (default: the spec's control_hz)")
    p.add_argument("--cameras", default="all", help="comma-separated camera names, 'all' or 'none'")
    p.add_argument("--image-size", type=int, default=None, help="square image size (default: the spec's)")
    p.add_argument("--camera-hz", type=float, default=None, help="image rate (default: every control step)")
    p.add_argument("--image-qos", default="sensor", choices=["sensor", "reliable"],
                   help="'reliable' for lossless (lockstep) recording")
    p.add_argument("--seed", type=int, default=0, help="seed of the first reset")
    p.add_argument("--reward-type", default="dense", choices=["dense", "sparse"])
    p.add_argument("--timeout", type=float, default=0.5, help="command watchdog in s (0: off)")
    p.add_argument("--joint-margin", type=float, default=0.01, help="rad kept clear of the spec's joint limits")
    p.add_argument("--velocity-scale", type=float, default=1.0, help="fraction of the spec's max_velocity allowed")
    p.add_argument("--max-accel", type=float, default=None, help="joint acceleration limit rad/s^2 (default: off)")
    p.add_argument("--limit-policy", default="clamp", choices=["clamp", "reject"],
                   help="out-of-limit joint targets: clamp them, or reject the whole command")
    p.add_argument("--no-workspace-limit", action="store_true", help="switch off the tool workspace check")
    p.add_argument("--loop", default="thread", choices=["thread", "timer"],
                   help="realtime loop: dedicated thread with absolute deadlines, or a plain rclpy timer (baseline)")
    p.add_argument("--rt-priority", type=int, default=50,
                   help="realtime mode: SCHED_FIFO priority of the control thread where the OS allows it (0: off)")
    p.add_argument("--spin-us", type=float, default=0.0, help="busy-wait the last N microseconds before each tick")
    p.add_argument("--diag-hz", type=float, default=2.0, help="/diagnostics rate (0: off)")
    p.add_argument("--wake-on-command", default="auto", choices=["auto", "on", "off"],
                   help="realtime hardware: apply a fresh /joint_command or /action_command when it arrives, not at "
                        "the next tick (auto: on for hardware drivers)")
    p.add_argument("--name", default="robot_node", help="node name")
    return p


_HW_OPTS = {"port": "port", "calibration": "calibration", "hardware": "hardware", "baudrate": "baudrate",
            "max_relative_target": "max_relative_target", "estop_hold": "estop_hold_s", "controller": "controller",
            "interface": "interface", "joint_map": "joint_map"}


def _parse_opt(v: str):
    import yaml
    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def make_robot(args):
    from robot_rl.drivers.registry import make_driver
    from robot_rl.spec import load_spec
    spec = load_spec(args.robot)
    safety = dict(margin=args.joint_margin, velocity_scale=args.velocity_scale, max_acceleration=args.max_accel,
                  timeout_s=args.timeout if args.timeout > 0 else None, limit_policy=args.limit_policy,
                  workspace=not args.no_workspace_limit)
    opts = {}
    for kv in args.driver_opt:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise ValueError(f"--driver-opt must be KEY=VALUE, got {kv!r}")
        opts[k.replace("-", "_")] = _parse_opt(v)
    if args.driver == "sim":
        if args.cameras == "all":
            cams = [c.name for c in spec.cameras]
        elif args.cameras in ("", "none"):
            cams = []
        else:
            cams = [c.strip() for c in args.cameras.split(",") if c.strip()]
        opts.update(task=args.task, cameras=cams, image_size=args.image_size, reward_type=args.reward_type,
                    seed=args.seed)
        if args.randomization is not None:
            opts["randomization"] = args.randomization
    elif args.randomization is not None:
        raise ValueError(f"--randomization is for --driver sim (the twin), not {args.driver}")
    for a, k in _HW_OPTS.items():
        v = getattr(args, a, None)
        if v is not None:
            opts[k] = v
    return make_driver(args.driver, robot=spec, action_mode=args.action_mode, safety=safety, control_hz=args.rate,
                       **opts)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    exit_on_help(build_parser, argv[1:])
    os.environ.setdefault("MUJOCO_GL", "egl")
    # software GL (Mesa llvmpipe): one raster thread renders small camera images faster and does
    # not compete with the control loop for every core
    os.environ.setdefault("LP_NUM_THREADS", "1")
    _import_ros()
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.utilities import remove_ros_args
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    if args.mode == "lockstep" and args.driver != "sim":
        print("robot_node: --mode lockstep needs --driver sim", file=sys.stderr)
        return 2
    try:
        robot = make_robot(args)  # validates robot, task, action mode, cameras, driver options; connects in start()
    except (ValueError, RuntimeError, KeyError) as e:  # SpecError, DriverError are ValueErrors
        print(f"robot_node: {e}", file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    if args.driver != "sim":
        # hardware: connect here, so that a wrong port / baud / model / calibration is one line and exit 2
        try:
            robot.connect()
        except Exception as e:  # noqa: BLE001
            print(f"robot_node: {e}", file=sys.stderr)
            rclpy.try_shutdown()
            return 2
    node = None
    try:
        node = RobotNode(robot, args.mode, rate=args.rate, image_qos=args.image_qos, camera_hz=args.camera_hz,
                         diag_hz=args.diag_hz, loop=args.loop, rt_priority=args.rt_priority, spin_us=args.spin_us,
                         node_name=args.name,
                         wake_on_command=None if args.wake_on_command == "auto" else args.wake_on_command == "on")
        if args.mode == "realtime":
            sys.setswitchinterval(2e-4)  # a waking control thread gets the GIL quickly
        gc.collect()
        gc.freeze()  # keep the long-lived objects out of the collector's scans (fewer pauses)
        where = args.task if args.driver == "sim" else f"driver {args.driver}"
        node.log.info(f"{robot.spec.name} / {where}: {args.mode} at {node.rate:g} Hz, action mode "
                      f"{args.action_mode}, cameras {[c.name for c in robot.spec.cameras]}")
        node.start()
        ex = SingleThreadedExecutor()
        ex.add_node(node.node)
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy()
        robot.disconnect()
        rclpy.try_shutdown()
    return 1 if node is not None and node.failed else 0


if __name__ == "__main__":
    sys.exit(main())
